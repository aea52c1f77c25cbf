"""The audit trail's patient hash. The trail itself (one row per invocation: ids, timings and
rule ids, which cards (uuid -> rule id) were shown, for whom (a keyed hash of the patient id,
never the id), by which client) is kept by cds_service.stores (AuditStore)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path


class PatientHasher:
    """A keyed hash of patient ids for logs: stable across processes, useless without the key.

    The key comes from CDS_LOG_HASH_KEY, or is made once and kept (mode 0600) in the data dir.
    """

    def __init__(self, key: str | None, data_dir: Path):
        # Keyed once: a copy of this prototype skips hmac.new's key padding and its two fresh
        # hash objects (2.1 us a hash instead of 3.0; one or two per hook call).
        self._keyed = hmac.new((key or _stored_key(data_dir)).encode(), digestmod=hashlib.sha256)

    def __call__(self, patient_id: str) -> str:
        mac = self._keyed.copy()
        mac.update(patient_id.encode())
        return mac.hexdigest()[:20]

    def patient(self, patient_id: str, issuer: str | None = None, tenant: str | None = None):
        """The hash of a patient as one client knows it. A patient id means something only
        within the EHR that sent it: "123" of one issuer (or tenant) is not "123" of another,
        so the issuer and tenant are hashed with it, and what the audit trail links to a
        patient (feedback that quiets a card) never reaches another EHR's patient. Calls
        without a verified client (--no-auth, the review console) keep the plain id's hash,
        a namespace of their own apart from every issuer's."""
        if issuer is None and tenant is None:
            return self(patient_id)
        return self("\x00".join(("client", issuer or "", tenant or "", patient_id)))


def _stored_key(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "log-hash.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(200):  # another worker is writing it right now
            key = path.read_text().strip()
            if len(key) == 64:
                return key
            time.sleep(0.01)
        raise RuntimeError(f"{path} does not hold a log hash key") from None
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_hex(32))
    return path.read_text().strip()
