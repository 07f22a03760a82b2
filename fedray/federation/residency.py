"""Virtual hospitals: which hospitals one process keeps built, so that any process can run any hospital.

A federation of K hospitals runs on A processes (Ray actors, or this
process): each round, the round's hospitals are queued onto the processes,
and a process runs one after another (Flower's virtual client engine and
pfl-research's worker processes do the same). For that, a hospital's state
lives outside any process, in a :class:`Ticket` the proxy keeps:

- its set-up: the constructor arguments of
  :class:`~fedray.federation.hospital.Hospital`, whose shards are object
  references under Ray (the object store holds K shards, once each);
- its accountant's state, as the hospital last reported it (``dp_steps``:
  record-independent counters, the same the proxy already restores after a
  crash);
- the number of turns it has had.

Nothing else of a hospital outlives its turn: :class:`LocalTrainer.fit
<fedray.training.local.LocalTrainer>` loads the global parameters, clears the
optimizer's state, and draws every stream from (party, round, purpose), so a
hospital rebuilt from its ticket trains exactly as the one built before it.
Its noise key is part of the set-up (a one-time release is re-created
identically by any process; a per-round stream is keyed by the round).

A :class:`Residency` keeps at most ``capacity`` hospitals built between their
turns, most recently used last. A hospital whose copy here has had as many
turns as its ticket says is reused; any other (never built here, evicted, or
trained elsewhere since) is built from its ticket. Memory per process is
therefore O(capacity × model + shard), and O(K × shard) for the whole
federation (its shards, in the object store), never O(K × model).

Under secure aggregation a hospital keeps its unmasked update between the
two steps of a masked round; the proxy pins the round's cohort (``pinned``)
until the masks are sent, so those are never evicted mid-round.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from fedray.federation.hospital import Hospital


@dataclass(frozen=True)
class Ticket:
    """What any process needs to run hospital ``hospital`` now: its set-up, its accountant's state, its turns."""

    hospital: int
    setup: dict = field(repr=False)
    state: dict
    turns: int


@dataclass
class _Held:
    turns: int
    party: Hospital


class NotHeld(Exception):
    """A turn that must continue a copy held here (a masked round's second step) found none current."""


def hospital_kwargs(setup: dict, get: Callable = lambda value: value) -> dict:
    """A hospital's constructor arguments from its set-up: its own entries and those under ``"shared"`` (what
    every hospital of the experiment is built with, stored once), each passed through ``get``."""
    values = {key: get(value) for key, value in setup.items()}
    return {**values.pop("shared"), **values}


def from_object_store(value):
    """``value``, fetched from Ray's object store when it is an object reference."""
    import ray

    return ray.get(value) if isinstance(value, ray.ObjectRef) else value


class Residency:
    """The hospitals one process holds between turns: at most ``capacity`` (plus the pinned ones)."""

    def __init__(self, get: Callable = lambda value: value):
        self.held: OrderedDict[int, _Held] = OrderedDict()
        self.pinned: set[int] = set()
        self.get = get  # how a set-up's values are fetched: from Ray's object store in an actor
        self.builds = 0

    def hospital(self, ticket: Ticket, capacity: int, *, held_only: bool = False) -> Hospital:
        """Hospital ``ticket.hospital`` as its ticket describes it: the copy held here if it is current, else
        built from the set-up and its accountant restored (``held_only``: else :class:`NotHeld`)."""
        held = self.held.pop(ticket.hospital, None)
        if held is None or held.turns != ticket.turns:
            held = None  # a stale copy is dropped before a new one is built
            if held_only:
                raise NotHeld(f"hospital {ticket.hospital} is not held here")
            self._make_room(capacity - 1)
            party = Hospital(**hospital_kwargs(ticket.setup, self.get))
            party.restore_privacy_state(ticket.state)
            held = _Held(ticket.turns, party)
            self.builds += 1
        self.held[ticket.hospital] = held
        return held.party

    def took_turn(self, hospital: int, turns: int) -> None:
        """Hospital ``hospital``'s copy here has now had ``turns`` turns (it trained)."""
        self.held[hospital].turns = turns

    def drop(self, hospital: int) -> None:
        """Forget a hospital whose turn failed: its state here is no longer known to match its ticket."""
        self.held.pop(hospital, None)
        self.pinned.discard(hospital)

    def clear(self) -> None:
        self.held.clear()
        self.pinned.clear()

    def _make_room(self, keep: int) -> None:
        """Evict the least recently used unpinned hospitals until at most ``keep`` unpinned ones remain."""
        unpinned = [k for k in self.held if k not in self.pinned]
        for hospital in unpinned[:max(0, len(unpinned) - keep)]:
            del self.held[hospital]


def together_groups(participants: list[int], together: int, processes: int) -> list[tuple[int, ...]]:
    """The round's hospitals in groups that train at once (``fl.train_together``): at most ``together`` each, and
    as many groups as ``processes`` where that makes them smaller, so every process gets a share."""
    hospitals = sorted(participants)
    if not hospitals:
        return []
    size = max(1, min(together, -(-len(hospitals) // processes)))
    return [tuple(hospitals[i:i + size]) for i in range(0, len(hospitals), size)]


def run_turn_together(residency: Residency, tickets: list[Ticket], method, args: tuple, *, capacity: int,
                      advances: bool = True):
    """``method(hospitals, *args)`` on the hospitals of ``tickets``, all built here at once (pinned for the turn,
    so building one never evicts another); each copy then counts one more turn when ``advances`` (they trained).
    A failure drops them all and re-raises."""
    parties = []
    try:
        for ticket in tickets:
            parties.append(residency.hospital(ticket, capacity))
            residency.pinned.add(ticket.hospital)
        value = method(parties, *args)
    except BaseException:
        for ticket in tickets:
            residency.drop(ticket.hospital)
        raise
    for ticket in tickets:
        if advances:
            residency.took_turn(ticket.hospital, ticket.turns + 1)
        residency.pinned.discard(ticket.hospital)
    return value


def run_turn(residency: Residency, ticket: Ticket, method, args: tuple, *, capacity: int, advances: bool = False,
             pin: bool | None = None, held_only: bool = False):
    """``method(hospital, *args)`` on the hospital of ``ticket``; afterwards its copy here counts one more turn
    when ``advances`` (it trained). ``pin``: True keeps it from eviction (a masked round's first step), False
    releases it (the second). ``held_only``: the turn continues a copy held here, never a new one
    (:class:`NotHeld`). A failure drops the copy and re-raises."""
    party = residency.hospital(ticket, capacity, held_only=held_only)
    if pin:
        residency.pinned.add(ticket.hospital)
    try:
        value = method(party, *args)
    except BaseException:
        residency.drop(ticket.hospital)
        raise
    if advances:
        residency.took_turn(ticket.hospital, ticket.turns + 1)
    if pin is False:
        residency.pinned.discard(ticket.hospital)
    return value
