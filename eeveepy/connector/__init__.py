"""The connector kit: what every chat connector needs that is not the platform."""
