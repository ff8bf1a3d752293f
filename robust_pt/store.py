"""The run directory: run.json (config, seed, versions, hashes) + records.jsonl, resumable.

    runs/<id>/run.json        what was run: the config (its sha256 is the run's identity),
                              package versions, checkpoint hashes, timestamps, status,
                              the summary when complete
    runs/<id>/records.jsonl   one JSON record per (example, eps), appended batch by batch
    runs/<id>/summary.csv     written when the run completes
    runs/<id>/samples/*.png   a few clean | adversarial | amplified-difference images

(The names, columns and summary statistics of this format are robust_pt/runformat.py's.)

Each batch's records are appended in one write, followed by a marker line
{"batch_done": b}, then flushed and fsynced. On restart the records of batches without a
marker (and a truncated last line from a kill) are dropped and those batches are run
again; completed batches are skipped, so no record is ever duplicated. A directory that
holds a run with a different config is refused, never mixed.

Streaming: a store with a directory keeps no records in memory (only the ids of the
completed batches); `records` reads them back from the file, so memory during a run does
not grow with the number of examples. Distributed runs (robust_pt/runtime/distributed.py) write
one such store per rank under runs/<id>/shards/rank-K/ and merge them with `batch_spans`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import RunDirError
from .outputs import usual_mode
from .runformat import FORMAT, MARKER, RECORDS, RUN_JSON, SAMPLES, SUMMARY, read_records  # noqa: F401  (the run's file names)


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(config: dict) -> str:
    return hashlib.sha256(canonical(config).encode()).hexdigest()


def config_diff(a: dict, b: dict) -> list[str]:
    """Top-level keys whose values differ (with the first differing sub-key, if nested)."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if canonical(va) == canonical(vb):
            continue
        if isinstance(va, dict) and isinstance(vb, dict):
            subs = [s for s in sorted(set(va) | set(vb)) if canonical(va.get(s)) != canonical(vb.get(s))]
            out.append(f"{k} ({', '.join(subs[:3])})" if subs else k)
        else:
            out.append(k)
    return out


def versions() -> dict[str, str | None]:
    """Versions of robust-pt and the libraries that decide attack results (no imports)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out: dict[str, str | None] = {"robust_pt": __version__}
    for pkg in ("torch", "torchattacks", "foolbox", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        usual_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunStore:
    """Records of one run, in memory and (when `path` is given) in a run directory."""

    def __init__(self, path: Path | None, config: dict, info: dict | None = None):
        self.path = Path(path) if path is not None else None
        self.config = config
        self.fingerprint = fingerprint(config)
        self.info = dict(info or {})
        self._records: list[dict] = []
        self.done: set[int] = set()
        self.meta: dict = {}
        if self.path is not None:
            self._open()

    # ------------------------------------------------------------------ open / resume
    def _open(self) -> None:
        p = self.path
        assert p is not None
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{p} exists and is not a directory; use another --out")
        run_json = p / RUN_JSON
        if run_json.exists():
            try:
                meta = json.loads(run_json.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise RunDirError(f"{run_json} is unreadable ({err}); delete {p} or use another --out") from None
            if meta.get("format") != FORMAT or "config" not in meta:
                raise RunDirError(f"{p} holds something that is not a robust-pt run; use another --out")
            if meta.get("fingerprint") != self.fingerprint:
                diff = config_diff(meta["config"], self.config) or ["config"]
                raise RunDirError(
                    f"{p} holds a run with a different config (differs in: {', '.join(diff)}); "
                    f"use another --out or delete it"
                )
            self.meta = meta
            self._load_records()
        else:
            if (p / RECORDS).exists():
                raise RunDirError(f"{p} holds records.jsonl but no run.json; use another --out or delete it")
            p.mkdir(parents=True, exist_ok=True)
            self.meta = {
                "format": FORMAT,
                "fingerprint": self.fingerprint,
                "config": self.config,
                **self.info,
                "versions": versions(),
                "created": _now(),
                "status": "running",
            }
            self._write_meta()

    def _load_records(self) -> None:
        """The completed batches of records.jsonl; partial batches and a cut tail are dropped."""
        assert self.path is not None
        f = self.path / RECORDS
        if not f.exists():
            return
        spans, clean = batch_spans(f)
        self.done = {sp.batch for sp in spans}
        if not clean:  # drop partial batches and a truncated tail before appending again
            write_spans(f, spans)

    def _write_meta(self) -> None:
        if self.path is not None:
            self.meta["updated"] = _now()
            _atomic_write_text(self.path / RUN_JSON, json.dumps(self.meta, indent=1, default=str))

    # ------------------------------------------------------------------ append / read
    def append_batch(self, batch: int, records: Iterable[dict]) -> None:
        """Append one batch's records (all eps) atomically enough: one write + marker + fsync."""
        recs = list(records)
        if batch in self.done:
            raise RunDirError(f"batch {batch} is already recorded in {self.path}")
        if self.path is not None:
            text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)
            text += json.dumps({MARKER: batch}) + "\n"
            with open(self.path / RECORDS, "a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        else:
            self._records += recs
        self.done.add(batch)

    @property
    def records(self) -> list[dict]:
        """Every completed record (read back from records.jsonl when the run has a directory)."""
        if self.path is None:
            return list(self._records)
        return list(iter_records(self.path / RECORDS))

    def samples_dir(self) -> Path | None:
        if self.path is None:
            return None
        d = self.path / SAMPLES
        d.mkdir(exist_ok=True)
        return d

    def finish(self, summary_rows: list[dict], stats: dict, summary_csv: str | None = None) -> None:
        self.meta.update(status="complete", summary=summary_rows, stats=stats, completed=_now())
        self._write_meta()
        if self.path is not None and summary_csv is not None:
            _atomic_write_text(self.path / SUMMARY, summary_csv)

    def set_status(self, **fields) -> None:
        self.meta.update(fields)
        self._write_meta()


def read_run(path: str | Path) -> tuple[dict, list[dict]]:
    """run.json and the completed records of a run directory (for reports)."""
    p = Path(path)
    run_json = p / RUN_JSON
    if not run_json.exists():
        raise RunDirError(f"{p} is not a run directory (no {RUN_JSON}); pass a directory made by `robust-pt attack`")
    meta = json.loads(run_json.read_text())
    return meta, list(iter_records(p / RECORDS))


# ----------------------------------------------------------------------------- scanning records.jsonl


@dataclass(frozen=True)
class BatchSpan:
    """Where one completed batch (its records, then its marker line) lies in a records file."""

    batch: int
    path: Path
    start: int  # byte offset of its first record line
    end: int  # byte offset just after its marker line
    lines: tuple[bytes, ...] | None = None  # only if its lines were not contiguous (never written so)


def batch_spans(f: Path) -> tuple[list[BatchSpan], bool]:
    """The completed batches of a records file in file order, and whether the file is clean
    (no partial batch, no cut last line, no duplicated batch). Reads line by line: memory
    does not grow with the file. A corrupt line before the last one is an error."""
    spans: list[BatchSpan] = []
    seen: set[int] = set()
    if not f.exists():
        return spans, True
    clean = True
    pending: dict[int, list[tuple[int, bytes]]] = {}
    bad_line = None
    offset = 0
    with open(f, "rb") as fh:
        for k, line in enumerate(fh):
            at, offset = offset, offset + len(line)
            if not line.strip():
                continue
            if bad_line is not None:
                raise RunDirError(f"{f} line {bad_line} is corrupt; delete {f.parent} and run again")
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad_line = k + 1  # tolerated only as the last line (cut by a kill)
                clean = False
                continue
            if not line.endswith(b"\n"):
                clean = False  # a complete last line without its newline: rewrite before appending
            if MARKER in obj:
                b = int(obj[MARKER])
                batch = pending.pop(b, [])
                if b in seen:
                    clean = False  # a duplicated batch (should not happen): keep the first
                    continue
                seen.add(b)
                first = batch[0][0] if batch else at
                contiguous = sum(len(ln) for _, ln in batch) == at - first
                spans.append(
                    BatchSpan(b, f, first, offset)
                    if contiguous
                    else BatchSpan(b, f, first, offset, tuple(ln for _, ln in batch) + (line,))
                )
            else:
                pending.setdefault(int(obj.get("batch", -1)), []).append((at, line))
    if pending:
        clean = False
    return spans, clean


def span_bytes(span: BatchSpan, fh=None) -> bytes:
    """The bytes of one batch (records and marker), each line ending in a newline."""
    if span.lines is not None:
        data = b"".join(span.lines)
    elif fh is None:
        with open(span.path, "rb") as f:
            f.seek(span.start)
            data = f.read(span.end - span.start)
    else:
        fh.seek(span.start)
        data = fh.read(span.end - span.start)
    return data if data.endswith(b"\n") else data + b"\n"


def write_spans(dest: Path, spans: list[BatchSpan]) -> None:
    """Write these batches (from any records files) to `dest` in the given order, atomically."""
    handles: dict[Path, Any] = {}
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            for sp in spans:
                if sp.path not in handles:
                    handles[sp.path] = open(sp.path, "rb")
                out.write(span_bytes(sp, handles[sp.path]))
            out.flush()
            os.fsync(out.fileno())
        usual_mode(tmp)
        os.replace(tmp, dest)
    finally:
        for h in handles.values():
            h.close()
        if os.path.exists(tmp):
            os.unlink(tmp)


def iter_records(f: Path) -> Iterator[dict]:
    """The records of the completed batches of a records file, in file order (runformat.read_records, the
    reader the report uses too; corrupt lines are skipped)."""
    if f.exists():
        yield from read_records(f)[0]
