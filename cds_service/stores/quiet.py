"""The quiet entries of issue 16 (see cds_service/quiet.py), beside the audit trail on either
engine: in `audit.sqlite3` embedded, in the shared database otherwise, so that every instance
quiets the same cards and a lift stops an entry at once everywhere.

The hook path makes one query (`for_patient`), and only for a patient each worker's index
(`quieted_patients`, read in the background about once a second) names: the patient's running
entries by the index on (patient_hash, until_day), and the pending entries (feedback that came
before its card's audit row, normally none) joined to the audit trail's card and invocation
rows of this patient.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from ..quiet import CardRecord, QuietEntry
from .schema import card, invocation, quiet
from .sql import answering, insert

_FOR_PATIENT = sa.text(
    """
SELECT id, card_uuid, reason, from_day, patient_hash, rule_id, indicator, evidence_digest,
    until_day, lifted_at, lifted_by, NULL AS c_rule_id, NULL AS c_indicator, NULL AS c_digest
FROM quiet
WHERE patient_hash = :patient AND until_day >= :today AND lifted_at IS NULL
UNION ALL
SELECT q.id, q.card_uuid, q.reason, q.from_day, q.patient_hash, q.rule_id, q.indicator,
    q.evidence_digest, q.until_day, q.lifted_at, q.lifted_by,
    c.rule_id, c.indicator, c.evidence_digest
FROM quiet AS q
JOIN card AS c ON c.card_uuid = q.card_uuid
JOIN invocation AS i ON i.id = c.invocation_id
WHERE q.patient_hash IS NULL AND q.lifted_at IS NULL AND i.patient_hash = :patient
"""
)


# Every patient with a running entry, and every patient whose audited card a pending entry
# names (the hook path's query then fills that entry in). Pending entries are normally none.
_QUIETED_PATIENTS = sa.text(
    """
SELECT DISTINCT patient_hash FROM quiet
WHERE patient_hash IS NOT NULL AND until_day >= :today AND lifted_at IS NULL
UNION
SELECT i.patient_hash
FROM quiet AS q
JOIN card AS c ON c.card_uuid = q.card_uuid
JOIN invocation AS i ON i.id = c.invocation_id
WHERE q.patient_hash IS NULL AND q.lifted_at IS NULL AND i.patient_hash IS NOT NULL
"""
)


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def _entry(row) -> QuietEntry:
    return QuietEntry(
        id=row.id,
        card_uuid=row.card_uuid,
        reason=row.reason,
        from_day=date.fromisoformat(row.from_day),
        patient_hash=row.patient_hash,
        rule_id=row.rule_id,
        indicator=row.indicator,
        evidence_digest=row.evidence_digest,
        until=_day(row.until_day),
        lifted_at=row.lifted_at,
        lifted_by=row.lifted_by,
    )


class SqlQuietStore:
    """cds_service.quiet.QuietStore on SQLAlchemy Core, the same statements on both engines."""

    def __init__(self, engine: sa.Engine):
        self._engine = engine
        # sqlite3 blocks in C: under gevent, background reads go to the hub's thread pool.
        self.blocking = engine.dialect.name == "sqlite"

    def quieted_patients(self, today: date) -> set[str]:
        """The patient hashes a hook call must look up (see _QUIETED_PATIENTS)."""
        with answering("quiet"), self._engine.connect() as connection:
            rows = connection.execute(_QUIETED_PATIENTS, {"today": today.isoformat()})
            return {row[0] for row in rows}

    def card(self, card_uuid: str) -> CardRecord | None:
        query = (
            sa.select(
                card.c.card_uuid,
                invocation.c.patient_hash,
                card.c.rule_id,
                card.c.indicator,
                card.c.evidence_digest,
            )
            .join(invocation, invocation.c.id == card.c.invocation_id)
            .where(card.c.card_uuid == card_uuid)
            .order_by(invocation.c.id.desc())
            .limit(1)
        )
        with answering("quiet"), self._engine.connect() as connection:
            row = connection.execute(query).first()
        return CardRecord(*row) if row else None

    def add(self, entry: QuietEntry) -> bool:
        values = {
            "card_uuid": entry.card_uuid,
            "reason": entry.reason,
            "from_day": entry.from_day.isoformat(),
            "patient_hash": entry.patient_hash,
            "rule_id": entry.rule_id,
            "indicator": entry.indicator,
            "evidence_digest": entry.evidence_digest,
            "until_day": entry.until.isoformat() if entry.until else None,
        }
        statement = (
            insert(self._engine, quiet)
            .values(values)
            .on_conflict_do_nothing(index_elements=["card_uuid"])
            .returning(quiet.c.id)  # psycopg's rowcount of this INSERT is -1: the rows say it
        )
        with answering("quiet"), self._engine.begin() as connection:
            return len(connection.execute(statement).all()) == 1

    def for_patient(
        self, patient_hash: str, today: date
    ) -> tuple[list[QuietEntry], list[tuple[QuietEntry, CardRecord]]]:
        params = {"patient": patient_hash, "today": today.isoformat()}
        with answering("quiet"), self._engine.connect() as connection:
            rows = connection.execute(_FOR_PATIENT, params).all()
        running, found = [], []
        for row in rows:
            entry = _entry(row)
            if entry.pending:
                record = CardRecord(
                    entry.card_uuid, patient_hash, row.c_rule_id, row.c_indicator, row.c_digest
                )
                found.append((entry, record))
            else:
                running.append(entry)
        return running, found

    def resolve(self, entry_id: int, resolved: QuietEntry | None) -> None:
        pending = sa.and_(quiet.c.id == entry_id, quiet.c.patient_hash.is_(None))
        if resolved is None:
            statement = sa.delete(quiet).where(pending)
        else:
            statement = (
                sa.update(quiet)
                .where(pending)
                .values(
                    patient_hash=resolved.patient_hash,
                    rule_id=resolved.rule_id,
                    indicator=resolved.indicator,
                    evidence_digest=resolved.evidence_digest,
                    until_day=resolved.until.isoformat() if resolved.until else None,
                )
            )
        with answering("quiet"), self._engine.begin() as connection:
            connection.execute(statement)

    def pending(self) -> list[tuple[QuietEntry, CardRecord | None]]:
        """One query: every pending entry, with its card's latest audit row when there is one."""
        query = (
            sa.select(
                quiet,
                card.c.rule_id.label("c_rule_id"),
                card.c.indicator.label("c_indicator"),
                card.c.evidence_digest.label("c_digest"),
                invocation.c.patient_hash.label("c_patient"),
                invocation.c.id.label("c_invocation"),
            )
            .select_from(
                quiet.outerjoin(card, card.c.card_uuid == quiet.c.card_uuid).outerjoin(
                    invocation, invocation.c.id == card.c.invocation_id
                )
            )
            .where(quiet.c.patient_hash.is_(None))
            .order_by(quiet.c.id, invocation.c.id.desc())
        )
        with answering("quiet"), self._engine.connect() as connection:
            rows = connection.execute(query).all()
        found: dict[int, tuple[QuietEntry, CardRecord | None]] = {}
        for row in rows:
            if row.id in found:
                continue  # an older invocation of the same card
            record = None
            if row.c_rule_id is not None:
                record = CardRecord(
                    row.card_uuid, row.c_patient, row.c_rule_id, row.c_indicator, row.c_digest
                )
            found[row.id] = (_entry(row), record)
        return list(found.values())

    def entries(
        self, patient_hash: str | None = None, active_on: date | None = None, limit: int = 1000
    ) -> list[QuietEntry]:
        query = sa.select(quiet).where(quiet.c.patient_hash.is_not(None))
        if patient_hash is not None:
            query = query.where(quiet.c.patient_hash == patient_hash)
        if active_on is not None:
            day = active_on.isoformat()
            query = query.where(
                quiet.c.from_day <= day, quiet.c.until_day >= day, quiet.c.lifted_at.is_(None)
            )
        query = query.order_by(quiet.c.id.desc()).limit(limit)
        with answering("quiet"), self._engine.connect() as connection:
            return [_entry(row) for row in connection.execute(query)]

    def lift(self, entry_id: int, by: str, at: str) -> bool:
        statement = (
            sa.update(quiet)
            .where(quiet.c.id == entry_id, quiet.c.lifted_at.is_(None))
            .values(lifted_at=at, lifted_by=by)
        )
        with answering("quiet"), self._engine.begin() as connection:
            return connection.execute(statement).rowcount == 1

    def purge_pending(self, before: date) -> int:
        statement = sa.delete(quiet).where(
            quiet.c.patient_hash.is_(None), quiet.c.from_day < before.isoformat()
        )
        with answering("quiet"), self._engine.begin() as connection:
            return connection.execute(statement).rowcount
