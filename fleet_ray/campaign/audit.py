"""The signed audit chain: every member operation becomes a receipt, signed and chained.

A receipt is one JSON object::

    {"v": 1, "campaign": "c1", "seq": 7, "kind": "campaign.member.complete",
     "physical": 1700000000123, "counter": 0, "key_id": "3f…", "parent_sig": "<seq 6's sig>",
     "payload": {...}, "sig": "<base64 Ed25519 over the canonical JSON of every other field>"}

``parent_sig`` is the previous receipt's signature, so the campaign is one linear chain. Appends are
serialised by a lock (the chain-tail mutex) in the driver, which alone holds the key; members send
their outcomes back and never sign. Receipts are buffered and flushed in order, first to the durable
event log (:class:`fleet_ray.observe.events.EventLog`, one event per receipt, id ``<campaign>:<seq>``, so a
retried flush is idempotent) and then to the optional NDJSON sink. After :meth:`AuditChain.close`
nothing more is written.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from fleet_ray.campaign.signing import SigningKey
from fleet_ray.errors import CampaignClosed, CampaignError
from fleet_ray.observe.events import Event, EventLog
from fleet_ray.observe.hlc import HLC

log = logging.getLogger(__name__)

RECEIPT_VERSION = 1
SIGNED_FIELDS = ("v", "campaign", "seq", "kind", "physical", "counter", "key_id", "parent_sig", "payload")


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def signing_bytes(receipt: dict[str, Any]) -> bytes:
    return canonical({k: receipt.get(k) for k in SIGNED_FIELDS})


def jsonable(value: Any, limit: int) -> Any:
    """``value`` itself when it is JSON and at most ``limit`` bytes, else a digest of it."""
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and value == value
                                                          and abs(value) != float("inf")):
        return value
    if isinstance(value, str) and len(value) * 4 <= limit:
        return value
    try:
        text = canonical(value)
    except (TypeError, ValueError):
        text = repr(value).encode()
        return {"repr_sha256": hashlib.sha256(text).hexdigest(), "type": type(value).__name__}
    if len(text) <= limit:
        return json.loads(text)
    return {"sha256": hashlib.sha256(text).hexdigest(), "bytes": len(text)}


def origin(campaign_id: str) -> str:
    return f"campaign:{campaign_id}"


class NdjsonSink:
    """Append-only NDJSON file of receipts; repaired on resume (a torn last line is cut off)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the campaign's life

    def _repair(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            log.warning("audit sink %s: dropping a torn last line (%d bytes)", self.path, len(data) - cut)
            with open(self.path, "r+b") as fh:
                fh.truncate(cut)

    def last_receipt(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        last = None
        with open(self.path, "rb") as fh:
            for line in fh:
                if line.strip():
                    last = line
        return json.loads(last) if last else None

    def write(self, lines: list[bytes]) -> None:
        self._fh.write(b"".join(lines))
        self._fh.flush()

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


class AuditChain:
    """Signs, chains and flushes receipts for one campaign (the driver's chain-tail mutex)."""

    def __init__(self, campaign_id: str, key: SigningKey | None, events: EventLog | None,
                 sink: NdjsonSink | None = None, hlc: HLC | None = None):
        self.campaign_id = campaign_id
        self._key = key
        self._events = events
        self._sink = sink
        self._hlc = hlc or HLC()
        self._lock = threading.Lock()  # the chain tail
        self._flush_lock = threading.Lock()  # keeps flushed batches in chain order
        self._pending: list[dict[str, Any]] = []
        self._seq = -1
        self._parent = ""
        self._closed = False
        self.written = 0
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def signing(self) -> bool:
        return self._key is not None

    @property
    def key_id(self) -> str | None:
        return self._key.key_id if self._key else None

    @property
    def last_seq(self) -> int:
        return self._seq

    def continue_from(self, tail: dict[str, Any]) -> None:
        """Pick the chain up after ``tail`` (the last receipt of an earlier run)."""
        with self._lock:
            self._seq = int(tail["seq"])
            self._parent = tail.get("sig") or ""
            self._hlc.merge((int(tail["physical"]), int(tail["counter"])))

    def append(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise CampaignClosed(self.campaign_id)
            ts = self._hlc.tick()
            receipt: dict[str, Any] = {
                "v": RECEIPT_VERSION, "campaign": self.campaign_id, "seq": self._seq + 1, "kind": kind,
                "physical": ts.physical, "counter": ts.counter, "key_id": self.key_id,
                "parent_sig": self._parent if self._key else None, "payload": payload,
            }
            if self._key is not None:
                receipt["sig"] = base64.b64encode(self._key.sign(signing_bytes(receipt))).decode()
                self._parent = receipt["sig"]
            else:
                receipt["sig"] = None
            self._seq += 1
            self._pending.append(receipt)
            return receipt

    def flush(self) -> int:
        """Write buffered receipts: durable log first, then the sink. Returns how many."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            if self._events is not None:
                try:
                    self._events.append([self._event(r) for r in batch])
                except Exception:
                    with self._lock:  # keep them for the next flush, still in order
                        self._pending[:0] = batch
                    raise
            if self._sink is not None:
                self._sink.write([canonical(r) + b"\n" for r in batch])
            self.written += len(batch)
            return len(batch)

    def start_background_flush(self, interval_s: float = 0.05) -> None:
        """Flush from a background thread whenever :meth:`flush_soon` asks (at most every
        ``interval_s``), so dispatching never waits on the store. ``close`` stops it."""

        def loop() -> None:
            while not self._closed:
                self._wake.wait()
                self._wake.clear()
                try:
                    self.flush()
                except Exception:  # kept pending; the next flush retries in order
                    log.exception("audit flush failed; will retry")
                time.sleep(interval_s)

        self._flusher = threading.Thread(target=loop, name=f"audit-flush:{self.campaign_id}", daemon=True)
        self._flusher.start()

    def flush_soon(self) -> None:
        if self._flusher is None:
            self.flush()
        else:
            self._wake.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _event(self, r: dict[str, Any]) -> Event:
        return Event(
            id=f"{self.campaign_id}:{r['seq']}", kind=r["kind"], physical=r["physical"], counter=r["counter"],
            origin=origin(self.campaign_id), message="", data={"receipt": r},
        )

    def close(self, final_kind: str | None = None, final_payload: dict[str, Any] | None = None) -> None:
        """Append a last receipt (optional), flush everything and close the sink. Idempotent."""
        if final_kind is not None and not self._closed:
            self.append(final_kind, final_payload or {})
        with self._lock:
            self._closed = True
        if self._flusher is not None:
            self._wake.set()
            self._flusher.join()
        self.flush()
        if self._sink is not None:
            self._sink.close()


def receipts_in_log(events: EventLog, campaign_id: str) -> list[dict[str, Any]]:
    """Every receipt of a campaign in the durable log, in chain (seq) order."""
    out = [e.data["receipt"] for e in events.query(origin=origin(campaign_id)) if "receipt" in e.data]
    return sorted(out, key=lambda r: r["seq"])


def sync_sink(sink: NdjsonSink, receipts: list[dict[str, Any]], campaign_id: str) -> int:
    """Bring a sink up to the durable log after a crash: append the receipts it is missing."""
    last = sink.last_receipt()
    if last is not None and last.get("campaign") != campaign_id:
        raise CampaignError(f"audit sink {sink.path} holds campaign {last.get('campaign')!r}, not {campaign_id!r}")
    have = -1 if last is None else int(last["seq"])
    missing = [r for r in receipts if r["seq"] > have]
    if missing:
        sink.write([canonical(r) + b"\n" for r in missing])
    return len(missing)
