"""Dagster resources: the project's settings, read from config.json and the environment, with the run lock;
and the IO manager that hands assets from step to step as files (bucket by bucket for the per-user assets)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow as pa
from pyarrow import ipc
from pydantic import Field, PrivateAttr

from assets.buckets import per_user_only
from pipeline.config import Settings, load_settings
from pipeline.runlock import RunLock
from pipeline.warehouse import catch_up_snapshot


class ShopSettings(dg.ConfigurableResource):
    """The project's `Settings`; `config_path` empty means $SHOPREC_CONFIG or the project's config.json.

    Set up once per run (once per step process with a multi-process executor), it takes the warehouse's run
    lock for the run's whole life: a second run started while one is going refuses with the holder named
    (see `pipeline.runlock`; a run's own processes share it). Holding it, it first lets the API catch up with
    a run that was committed but killed before its snapshot was written. A run of per-user buckets only
    writes nothing to the warehouse and takes no lock, so bucket runs can run side by side."""

    config_path: str = ""
    _lock: RunLock | None = PrivateAttr(default=None)

    def get(self) -> Settings:
        return load_settings(self.config_path or None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.dagster_run is None or per_user_only(context.dagster_run):  # outside a run: no lock
            return
        warehouse = self.get().warehouse_path
        self._lock = RunLock(warehouse)
        self._lock.acquire(context.dagster_run.run_id)
        catch_up_snapshot(warehouse)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class BucketedFilesystemIOManager(dg.ConfigurableIOManager):
    """Each asset's value stored to `<base_dir>/<asset>` (a polars table as Arrow IPC, anything else pickled,
    as Dagster's filesystem IO manager does), where a per-user asset's step returns `{bucket: value}` for
    the buckets of its run, stored as `<base_dir>/<asset>/<bucket>`, and is read back as `{bucket: value}`
    for whichever buckets a later step needs. Files are written whole, then renamed, so a reader on shared
    storage never sees half of one.

    `base_dir` empty means the Dagster instance's storage folder; steps on several machines need it on
    storage they all mount (docs/cluster/)."""

    base_dir: str = Field(default="", description="Folder for the files; empty: $DAGSTER_HOME/storage.")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        root = self._root(context.step_context.instance)
        if not context.has_asset_partitions:
            store_value(root.joinpath(*context.asset_key.path), obj)
            return
        keys = context.asset_partition_keys
        if not isinstance(obj, Mapping) or set(obj) != set(keys):
            raise TypeError(f"{context.asset_key.to_user_string()} must return {{bucket: value}} for "
                            f"exactly the buckets of its run ({', '.join(keys)})")
        folder = root.joinpath(*context.asset_key.path)
        if folder.is_file():  # the asset was not partitioned before
            folder.unlink()
        for key in keys:
            if isinstance(obj, SpilledBuckets):  # already written, bucket by bucket: moved, not pickled again
                folder.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(folder / f".{key}.incoming", ignore_errors=True)  # a killed step's
                incoming = shutil.move(obj.path(key), folder / f".{key}.incoming")  # a rename on one disk
                replace_path(Path(incoming), folder / key)
            else:
                store_value(folder / key, obj[key])
        if isinstance(obj, SpilledBuckets):
            obj.discard()
        context.add_output_metadata({"path": dg.MetadataValue.path(str(folder))})

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._root(context.instance).joinpath(*context.asset_key.path)
        if not context.has_asset_partitions:
            return load_value(path)
        missing = [key for key in context.asset_partition_keys if not (path / key).exists()]
        if missing:
            raise FileNotFoundError(f"{context.asset_key.to_user_string()} has no {', '.join(missing)} in {path}: "
                                    "materialize those buckets first (the nightly job does every bucket)")
        return LazyBuckets({key: path / key for key in context.asset_partition_keys})

    def _root(self, instance: dg.DagsterInstance) -> Path:
        return Path(self.base_dir or instance.storage_directory())


class LazyBuckets(dict):
    """A per-user input's `{bucket: value}`, each value read from its file when asked for, and only the
    latest one held: a step that walks the buckets one at a time holds one bucket's data, not every
    bucket's (at a million users, every bucket's lists and texts at once are several GB). A dict (Dagster
    checks inputs typed `dict` with isinstance) whose items and values are read the same lazy way."""

    def __init__(self, paths: dict[str, Path]):
        super().__init__(paths)
        self._held: tuple[str | None, Any] = (None, None)

    def __getitem__(self, key: str) -> Any:
        if self._held[0] != key:
            path = super().__getitem__(key)
            self._held = (None, None)  # let the previous bucket go before reading the next
            self._held = (key, load_value(path))
        return self._held[1]

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 (dict.get would skip the lazy read)

    def values(self) -> Iterator[Any]:
        return (self[key] for key in self)

    def items(self) -> Iterator[tuple[str, Any]]:
        return ((key, self[key]) for key in self)


STALE_SPILL_SECONDS = 86_400
"""A spill folder this old belongs to a step that died before the IO manager moved its files."""


class SpilledBuckets(LazyBuckets):
    """A per-user step's `{bucket: value}` as it is made: each bucket's value is pickled to a file when the
    step sets it, and let go, so the step holds one bucket's result at a time instead of every bucket's until
    it returns (a million users' explanations are several GB); reading a bucket back reads its file. The IO
    manager then moves the files into place instead of pickling the values again. Made by `spilled_buckets`."""

    def __init__(self, folder: Path):
        super().__init__({})
        self.folder = folder

    def __setitem__(self, key: str, value: Any) -> None:
        path = self.folder / key
        store_value(path, value)
        super().__setitem__(key, path)
        self._held = (None, None)

    @contextmanager
    def filling(self, key: str) -> Iterator["TablesWriter"]:
        """Store a bucket's value a slice at a time: append each slice's tables to the yielded writer, then
        `finish` it with the value's other fields. Only a slice is ever held, not the bucket (a million users'
        texts and claims are several GB)."""
        path = self.folder / key
        with TablesWriter(path) as writer:
            yield writer
        super().__setitem__(key, path)
        self._held = (None, None)

    def path(self, key: str) -> Path:
        return dict.__getitem__(self, key)

    def discard(self) -> None:
        """Remove what is left of the files (after the IO manager moved them, the folder)."""
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def spilled_buckets(context: dg.AssetExecutionContext) -> Iterator[SpilledBuckets]:
    """A `SpilledBuckets` in a fresh folder of the instance's storage, removed if the step fails (and, should
    the process die, by a later step once it is a day old)."""
    spill = Path(context.instance.storage_directory()) / ".spilled"
    spill.mkdir(parents=True, exist_ok=True)
    for stale in spill.iterdir():
        if time.time() - stale.stat().st_mtime > STALE_SPILL_SECONDS:
            shutil.rmtree(stale, ignore_errors=True)
    buckets = SpilledBuckets(Path(tempfile.mkdtemp(prefix=f"{context.asset_key.to_user_string()}-", dir=spill)))
    try:
        yield buckets
    except BaseException:
        buckets.discard()
        raise


def store_value(path: Path, obj: Any) -> None:
    """Write `obj` to `path` whole (written aside, then renamed), for `load_value`: a polars table as Arrow
    IPC, a value whose class names `FRAME_FIELDS` as a folder (each of those tables as Arrow IPC, the rest
    pickled), anything else pickled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if getattr(type(obj), "FRAME_FIELDS", ()):
        with TablesWriter(path) as writer:
            writer.finish(obj)
        return
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
        try:
            if isinstance(obj, pl.DataFrame):  # Arrow IPC: 3x faster both ways than pickling (20M events: 0.8 s)
                obj.write_ipc(file, compression="uncompressed")
            else:
                pickle.dump(obj, file, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            os.unlink(file.name)
            raise
    replace_path(Path(file.name), path)


def load_value(path: Path) -> Any:
    """What `store_value` wrote (a value stored as a folder comes back as its `StoredTables`)."""
    if path.is_dir():
        return StoredTables(path)
    with open(path, "rb") as file:
        if file.read(len(ARROW_MAGIC)) == ARROW_MAGIC:
            return pl.read_ipc(path)
        file.seek(0)
        return pickle.load(file)


class TablesWriter:
    """Writes a value whose class names `FRAME_FIELDS` as `store_value`'s folder: each of those tables an Arrow
    IPC file, which `append` may fill a slice at a time (each slice written straight to its file), and the
    value's other fields pickled by `finish`, which then puts the folder at `path` whole. As a context manager,
    it leaves nothing behind when the block fails, or ends without `finish`."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        self._files: dict[str, tuple[ipc.RecordBatchFileWriter, pa.Schema]] = {}
        self.finished = False

    def append(self, **tables: pl.DataFrame) -> None:
        """Add rows to tables of the value (by field name); every slice of a table has its first slice's columns."""
        for name, frame in tables.items():
            rows = frame.to_arrow()
            if name not in self._files:
                self._files[name] = (ipc.new_file(self._folder / f"{name}{ARROW_SUFFIX}", rows.schema), rows.schema)
            file, schema = self._files[name]
            file.write_table(rows if rows.schema == schema else rows.cast(schema))

    def finish(self, value: Any) -> None:
        """Write `value`'s tables that were not appended, and its other fields, then put the folder in place."""
        fields = type(value).FRAME_FIELDS
        for name in fields:
            if name not in self._files:
                self.append(**{name: getattr(value, name)})
        for file, _ in self._files.values():
            file.close()
        with open(self._folder / REST_FILE, "wb") as file:
            pickle.dump(dataclasses.replace(value, **dict.fromkeys(fields)), file, protocol=pickle.HIGHEST_PROTOCOL)
        replace_path(self._folder, self._path)
        self.finished = True

    def __enter__(self) -> "TablesWriter":
        return self

    def __exit__(self, failure: type[BaseException] | None, *_) -> None:
        if self.finished:
            return
        for file, _ in self._files.values():
            with contextlib.suppress(Exception):
                file.close()
        shutil.rmtree(self._folder, ignore_errors=True)
        if failure is None:
            raise RuntimeError(f"{self._path.name}: its tables were written but never finished")


class StoredTables:
    """A value `store_value` wrote as a folder: its other fields as they were, each of its `FRAME_FIELDS`
    read from its file when asked for, and not kept, so a reader that takes one table at a time holds one
    (publishing a bucket of a million users' texts, then their claims, never holds both)."""

    def __init__(self, folder: Path):
        with open(folder / REST_FILE, "rb") as file:
            self._rest = pickle.load(file)
        self._folder = folder

    def __getattr__(self, name: str) -> Any:
        if name in type(self._rest).FRAME_FIELDS:
            return pl.read_ipc(self._folder / f"{name}{ARROW_SUFFIX}")
        return getattr(self._rest, name)


def replace_path(new: Path, path: Path) -> None:
    """Put `new` (a file or a folder) at `path`, replacing whatever is there: a folder cannot be renamed over
    another, so the old one is renamed aside first and removed after."""
    if path.is_dir():
        old = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


ARROW_SUFFIX = ".arrow"
REST_FILE = "rest.pickle"
ARROW_MAGIC = b"ARROW1"
"""How an Arrow IPC file begins (a pickle begins with its protocol's opcode)."""
