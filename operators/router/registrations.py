"""The router's registrations on the bus: accepted, refused, kept in its key-value bucket.

Command operators publish their registrations on ``{p}.command.register``; the
:class:`Registrar` checks each (schema, operator id, :func:`check_registration`, clashes),
enters it in the :class:`~operators.router.registry.Registry` and stores it under
``reg.<name>.<operator-id>`` so a restarted router loses none, or refuses it on
``{p}.command.rejected.<operator-id>``. Registrations are owned: a command belongs to the
operator that registered it first, and another may take it over only when the router's
``owners`` setting lists it for that command and the holder no longer answers pings. An
operator registers on ``{p}.command.register.<its id>`` (which the bus lets only it publish to)
and may name only itself there. See "Registration" in docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
from typing import Any, Final

from nats.js.kv import KeyValue
from pydantic import ValidationError

from eeveepy import Operator
from eeveepy.errors import EeveeError, NoRespondersError, SubjectError
from eeveepy.protocol.codec import describe_validation_error
from eeveepy.protocol.commands import check_registration
from eeveepy.protocol.models import (
    CommandRegistration,
    CommandRejected,
    CommandSync,
    CommandUnregistration,
    Envelope,
    Ping,
    Pong,
)
from eeveepy.protocol.subjects import validate_operator_id

from .registry import Registry
from .settings import RouterSettings

__all__ = ["KV_PREFIX", "PING_TIMEOUT", "Registrar"]

KV_PREFIX: Final = "reg."
"""Key of a registration in the router's bucket: ``reg.<name>.<operator-id>``."""

PING_TIMEOUT: Final = 0.5
"""Seconds to wait for a clashing registration's operator to answer a ping."""


class Registrar:
    """Keeps ``registry`` in step with the registrations published on the bus."""

    def __init__(self, op: Operator[RouterSettings], registry: Registry) -> None:
        self.op = op
        self.registry = registry
        self._kv: KeyValue | None = None

    async def start(self) -> None:
        """Load the stored registrations, then ask every command operator to register again."""
        try:
            self._kv = await self.op.kv()
        except EeveeError as exc:
            self.op.log.warning(
                "no key-value store: registrations will not survive a restart", error=str(exc)
            )
        else:
            await self._load()
        await self.op.ipc.publish(self.op.subjects.command_sync(), CommandSync(router=self.op.id))

    async def _load(self) -> None:
        assert self._kv is not None
        loaded = 0
        watcher = await self._kv.watchall(ignore_deletes=True)
        try:
            async with asyncio.timeout(5.0):
                async for entry in watcher:
                    if entry is None:  # the end of what is stored
                        break
                    if not entry.key.startswith(KV_PREFIX) or entry.value is None:
                        continue
                    try:
                        reg = CommandRegistration.model_validate_json(entry.value)
                    except ValidationError as exc:
                        self.op.log.warning(
                            "stored registration dropped", key=entry.key, error=str(exc)
                        )
                        continue
                    if check_registration(reg):
                        continue
                    self.registry.add(reg)
                    loaded += 1
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
        self.op.log.info("registrations loaded", count=loaded)

    async def on_own_register(self, env: Envelope[dict[str, Any]]) -> None:
        """A registration on ``command.register.<id>``: as :meth:`on_register`, for ``id`` only.

        The ipc layer has checked that ``source`` is the subject's ``id`` (dead-lettered
        otherwise), and the bus lets only that operator publish there.
        """
        claimed = env.body.get("operator")
        if claimed != env.source:
            name = str(env.body.get("name", ""))
            reason = f"operator {env.source} may only register its own commands, not {claimed!r}'s"
            await self._reject(name, env.source, reason)
            return
        if env.kind == CommandUnregistration.KIND:
            await self.on_unregister(env)
            return
        await self.on_register(env)

    async def on_unregister(self, env: Envelope[dict[str, Any]]) -> None:
        """An operator withdraws a command it registered (only on its own subject)."""
        try:
            gone = CommandUnregistration.model_validate(env.body)
        except ValidationError as exc:
            reason = describe_validation_error(exc, limit=exc.error_count())
            self.op.log.warning("unregistration dropped", source=env.source, reason=reason)
            return
        reg = self.registry.get(gone.name, gone.operator)
        if reg is None:
            return
        self.op.log.info("command unregistered", name=reg.name, owner=reg.operator)
        await self._forget(reg)

    def _owners_refuse(self, reg: CommandRegistration) -> str | None:
        """Why the ``owners`` setting refuses ``reg`` (None: it does not)."""
        owners = self.op.settings.owners
        for name in (reg.name, *reg.aliases):
            allowed = owners.get(name)
            if allowed is not None and not _listed(reg.operator, allowed):
                return f"`{name}` may only be registered by {', '.join(allowed) or 'nobody'}"
        return None

    def _may_take_over(self, reg: CommandRegistration, other: CommandRegistration) -> bool:
        """``owners`` lists ``reg``'s operator for every name it would take from ``other``."""
        owners = self.op.settings.owners
        taken = {other.name, *other.aliases} & {reg.name, *reg.aliases}
        return all(_listed(reg.operator, owners.get(name, [])) for name in taken)

    async def on_register(self, env: Envelope[dict[str, Any]]) -> None:
        """A registration published on ``command.register``: accept it or refuse it."""
        body = env.body
        claimed = body.get("operator")
        if not isinstance(claimed, str):
            claimed = env.source
        name = str(body.get("name", ""))
        if env.kind != CommandRegistration.KIND:
            await self._reject(name, claimed, f"kind must be {CommandRegistration.KIND!r}")
            return
        try:
            reg = CommandRegistration.model_validate(body)
        except ValidationError as exc:
            reason = describe_validation_error(exc, limit=exc.error_count())
            await self._reject(name, claimed, reason)
            return
        try:
            validate_operator_id(reg.operator)
        except SubjectError as exc:
            await self._reject(reg.name, env.source, f"operator: {exc}")
            return
        problem = check_registration(reg) or self._owners_refuse(reg)
        if problem:
            await self._reject(reg.name, reg.operator, problem)
            return
        for other in self.registry.conflicts(reg):
            if (
                other.operator != reg.operator
                and self._may_take_over(reg, other)
                and await self._gone(other.operator)
            ):
                self.op.log.info(
                    "stale registration replaced", name=other.name, owner=other.operator
                )
                await self._forget(other)
                continue
            clash = ", ".join(sorted({other.name, *other.aliases} & {reg.name, *reg.aliases}))
            await self._reject(
                reg.name,
                reg.operator,
                f"`{clash}` clashes with command `{other.name}` of operator {other.operator}"
                " (a command belongs to the operator that registered it first; the router's"
                " `owners` setting may let another take it over when that one is gone)",
            )
            return
        if self.registry.add(reg):
            self.op.log.info("command registered", name=reg.name, owner=reg.operator)
            await self._store(reg)

    async def _gone(self, operator_id: str) -> bool:
        """True when nobody answers ``operator_id``'s pings: its registrations are stale."""
        try:
            await self.op.ipc.request(
                self.op.subjects.operator_ping(operator_id), Ping(), Pong, timeout=PING_TIMEOUT
            )
        except NoRespondersError:
            return True
        except Exception:  # a timeout or an odd answer: someone is there
            return False
        return False

    async def _reject(self, name: str, operator: str, reason: str) -> None:
        self.op.log.warning("registration rejected", name=name, owner=operator, reason=reason)
        try:
            subject = self.op.subjects.command_rejected(operator)
        except SubjectError:
            return  # no valid operator id to tell
        await self.op.ipc.publish(
            subject, CommandRejected(name=name, operator=operator, reason=reason)
        )

    async def _store(self, reg: CommandRegistration) -> None:
        if self._kv is None:
            return
        try:
            await self._kv.put(
                f"{KV_PREFIX}{reg.name}.{reg.operator}", reg.model_dump_json().encode()
            )
        except Exception as exc:
            self.op.log.error("could not store a registration", name=reg.name, error=repr(exc))

    async def _forget(self, reg: CommandRegistration) -> None:
        self.registry.remove(reg.name, reg.operator)
        if self._kv is None:
            return
        try:
            await self._kv.delete(f"{KV_PREFIX}{reg.name}.{reg.operator}")
        except Exception as exc:
            self.op.log.error("could not delete a registration", name=reg.name, error=repr(exc))


def _listed(operator_id: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(operator_id, pattern) for pattern in patterns)
