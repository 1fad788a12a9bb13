"""Tasks whose problems come from data files (json, jsonl, parquet).

:func:`read_records` reads a file into ``(where, record)`` pairs, where ``where``
names the place in the file ("line 12", "record 3", "row 7") for error messages.
:class:`FileTask` turns records into problems: the train split reads
``task.path``, the test split ``task.test_path``. Every problem in a file is
wrong in the same way or not at all: a missing, empty or malformed file, or a
record without the needed fields, raises ``ValueError`` naming the file, the
place and the fix.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from pathlib import Path
from typing import Any

from workbench.tasks.base import Problem, Task, check_split

SUFFIXES = (".json", ".jsonl", ".parquet")


def _data_error(path: Path | str, message: str) -> ValueError:
    return ValueError(f"data file {path}: {message}")


def _plain(value: Any) -> Any:
    """numpy arrays (parquet list columns) as lists; other values unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


def _read_json(path: Path, text: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        hint = " (it looks like JSON lines: rename it to .jsonl)" if error.msg == "Extra data" else ""
        raise _data_error(
            path, f"line {error.lineno}, column {error.colno}: invalid JSON ({error.msg}){hint}; fix the file"
        ) from None
    if not isinstance(data, list):
        raise _data_error(path, f"expected a JSON list of objects, found {type(data).__name__}; fix the file")
    return [(f"record {i + 1}", record) for i, record in enumerate(data)]


def _read_jsonl(path: Path, text: str) -> list[tuple[str, dict]]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise _data_error(
                path, f"line {number}: invalid JSON ({error.msg}); each line must hold one JSON object, fix that line"
            ) from None
    return records


def _read_parquet(path: Path) -> list[tuple[str, dict]]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise _data_error(path, f"not a readable parquet file ({error}); replace it with a valid one") from None
    return [
        (f"row {i + 1}", {key: _plain(value) for key, value in record.items()})
        for i, record in enumerate(frame.to_dict(orient="records"))
    ]


def read_records(path: str | Path) -> list[tuple[str, dict]]:
    """``(where, record)`` for each record of a .json (a list), .jsonl or .parquet file."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise _data_error(path, f"unsupported file type {path.suffix!r}; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise _data_error(path, "no such file; check the path (task.path / task.test_path, or the data folder)")
    if path.suffix == ".parquet":
        records = _read_parquet(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise _data_error(path, f"not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
        records = _read_json(path, text) if path.suffix == ".json" else _read_jsonl(path, text)
    if not records:
        raise _data_error(path, "the file holds no problems; point the task at a file with problems")
    for where, record in records:
        if not isinstance(record, dict):
            raise _data_error(path, f"{where}: expected a JSON object, found {type(record).__name__}; fix it")
    return records


class RecordError(ValueError):
    """A record lacks a field or has a bad value; the file reader adds file and place."""


def get_field(record: dict, *names: str) -> Any:
    """The first present, non-null field of ``names``; RecordError naming them otherwise."""
    for name in names:
        if record.get(name) is not None:
            return record[name]
    wanted = " or ".join(repr(n) for n in names)
    raise RecordError(f"no {wanted} field (fields present: {', '.join(sorted(record)) or 'none'})")


def prompt_and_system(value: Any) -> tuple[str, str | None]:
    """The question text and the system message of a prompt field.

    A prompt is a string, or a list of chat messages (``{"role", "content"}``): then
    the last user message is the question and the first system message the system.
    """
    if isinstance(value, str):
        return value, None
    if isinstance(value, (list, tuple)):
        messages = [_plain(m) for m in value]
        if all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            users = [m["content"] for m in messages if m["role"] == "user"]
            systems = [m["content"] for m in messages if m["role"] == "system"]
            if users:
                return str(users[-1]), (str(systems[0]) if systems else None)
    raise RecordError("the prompt must be a string or a list of chat messages with a 'user' message")


class FileTask(Task):
    """A task read from files: train from ``task.path``, test from ``task.test_path``."""

    default_system: str | None = None

    @abstractmethod
    def parse_record(self, record: dict) -> tuple[str, str, str | None]:
        """(prompt, gold answer, system message or None) of one record; RecordError if malformed."""

    def problems(self, split: str) -> list[Problem]:
        check_split(split)
        path = self.options.path if split == "train" else self.options.test_path
        if path is None:
            setting = "task.path" if split == "train" else "task.test_path"
            raise ValueError(f"task {self.name!r} has no {split} file: set {setting} to a .json, .jsonl or .parquet file")
        return self.load_file(path)

    def load_file(self, path: str | Path) -> list[Problem]:
        """The problems of one data file, at most ``max_problems`` of them, in file order."""
        problems: list[Problem] = []
        seen: dict[str, str] = {}
        for index, (where, record) in enumerate(read_records(path)):
            try:
                prompt, answer, file_system = self.parse_record(record)
            except RecordError as error:
                raise _data_error(path, f"{where}: {error}; fix or remove that record") from None
            problem_id = str(record.get("id") if record.get("id") is not None else _extra_index(record, index))
            if problem_id in seen:
                raise _data_error(path, f"{where}: id {problem_id!r} repeats {seen[problem_id]}; ids must be unique")
            seen[problem_id] = where
            system = self.options.system_prompt or file_system or self.default_system
            problems.append(Problem(id=problem_id, prompt=prompt, answer=answer, system=system,
                                    level=record_level(record)))
        return self._cap(problems)


def record_level(record: dict) -> int | None:
    """A record's difficulty level: its ``level`` field as an integer (``3``, ``"3"`` or MATH's ``"Level 3"``);
    None when it has none or it is not a whole number (MATH's ``"Level ?"``)."""
    value = record.get("level")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if float(value).is_integer() and value >= 0 else None
    text = str(value).strip().removeprefix("Level").strip()
    return int(text) if text.isdigit() else None


def _extra_index(record: dict, index: int) -> Any:
    """The ``extra_info.index`` of verl-style parquet files, else the position in the file."""
    extra = record.get("extra_info")
    if isinstance(extra, dict) and extra.get("index") is not None:
        return extra["index"]
    return index
