"""Parse a CSV stream with pyarrow's streaming reader, hashing and checking its bytes on the way.

One pass over the file reads, hashes (sha256 of the bytes, the value the ModelHub records),
checks the text (UTF-8, no NUL byte) and parses it block by block, so neither the file's bytes
nor its text are ever held whole: a 203 MB file (2M rows) parsed in 2.5 s into a 208 MB Arrow
table, 36 MB more at the peak. Before, its bytes, its decoded text and ``pd.read_csv``'s
frame took ``atm enter_data`` to 9.5x the file's size.

Types are pandas' (:func:`atm_core.data.loading.read_table` relies on it):

* each column's type is inferred on the first block (4 MB); when a later block does not fit
  (a number column with a word further down), the reader starts again with that column
  widened (null -> integer -> float -> text), so the type holds for the whole file as with
  ``pd.read_csv``. Each widening costs a new pass over the file (none on most files).
* text keeps every character as written (no whitespace stripped) and is dictionary-encoded:
  pandas categories. Dates and times stay text (pandas does not parse them either).
* pandas' missing-value words (``NA``, ``null``, ``None``, empty...) are missing; ``True`` and
  ``False`` (any case pandas accepts) are booleans; an all-empty column is float.
* column names as pandas gives them: ``Unnamed: i`` for an empty header, ``a.1`` for a
  repeated ``a``.

What pyarrow refuses but pandas reads (a row with fewer fields, a header one field short of
the rows, which pandas takes as the index) is read by ``pd.read_csv`` from a new stream, so
such files load as they did before. Known differences from pandas: hexadecimal integers
(``0x10``) are numbers, integers beyond 64 bits floats.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Callable
from typing import IO, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

BLOCK_BYTES = 4 * 1024 * 1024  # each block's rows are parsed and converted at once
# pandas' default missing-value words (pandas.read_csv's na_values)
MISSING = sorted(pd._libs.parsers.STR_NA_VALUES)
TRUE, FALSE = ["True", "TRUE", "true"], ["False", "FALSE", "false"]
TEXT = pa.dictionary(pa.int32(), pa.string())  # text columns: pandas categories
_CONVERSION_ERROR = re.compile(
    r"In CSV column #(\d+): .*CSV conversion error to [^:]+: invalid value '(.*)'$", re.DOTALL
)


class NotUtf8(Exception):
    """The stream is not UTF-8 text."""


class BinaryData(Exception):
    """The stream holds a NUL byte: a binary file, not text."""


class EmptyText(Exception):
    """The stream is empty or only whitespace."""


class PandasOnly(Exception):
    """pyarrow cannot parse the stream; ``pd.read_csv`` may."""


class CheckedStream(io.RawIOBase):
    """A binary stream that hashes, measures and checks the bytes read through it.

    A problem found (not UTF-8, a NUL byte) ends the stream early (as if at its end) and is
    raised by :meth:`finish`, so the parser never sees a half-decoded error.
    """

    def __init__(self, handle: IO[bytes], progress: Callable[[int], None] | None = None) -> None:
        self._handle = handle
        self._progress = progress
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")()
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.blank = True
        self.problem: Exception | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.problem is not None:
            return b""
        data = self._handle.read(size)
        self.sha256.update(data)
        self.size += len(data)
        if self.blank and data.strip():
            self.blank = False
        try:
            self._decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            self.problem = NotUtf8()
            return b""
        if b"\x00" in data:
            self.problem = BinaryData()
            return b""
        if self._progress is not None:
            self._progress(self.size)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> str:
        """Read what is left (hashing it) and return the sha256; raise a problem found."""
        while self.problem is None and self.read(BLOCK_BYTES):
            pass
        if self.problem is not None:
            raise self.problem
        if self.blank:
            raise EmptyText()
        return self.sha256.hexdigest()


def pandas_names(names: list[str]) -> list[str]:
    """Column names as ``pd.read_csv`` makes them: ``Unnamed: i`` for an empty one, and
    ``a.1``, ``a.2``... for repeats."""
    names = [name if name != "" else f"Unnamed: {index}" for index, name in enumerate(names)]
    counts: defaultdict[str, int] = defaultdict(int)
    for index, name in enumerate(names):
        count = counts[name]
        while count > 0:
            counts[name] = count + 1
            name = f"{name}.{count}"
            count = counts[name]
        names[index] = name
        counts[name] = count + 1
    return names


def read_arrow(open_stream: Callable[[], CheckedStream]) -> tuple[pa.Table, CheckedStream]:
    """Parse the CSV ``open_stream()`` gives (called again for each widening pass): the table,
    with pandas' names and the types of the module docstring, and the stream it was read from
    (read to its end: its ``sha256`` and ``size`` are the file's).

    Raises :class:`PandasOnly` when pyarrow cannot parse the text, the stream's problem
    (:class:`NotUtf8`, :class:`BinaryData`, :class:`EmptyText`) when it has one.
    """
    widened: dict[str, pa.DataType] = {}
    names: list[str] | None = None
    while True:
        stream = open_stream()
        read_options = pa_csv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False)
        if names is not None:  # the header is known: pandas' names, so repeats can be typed
            read_options.column_names, read_options.skip_rows = names, 1
        convert = pa_csv.ConvertOptions(
            null_values=MISSING,
            true_values=TRUE,
            false_values=FALSE,
            strings_can_be_null=True,
            auto_dict_encode=True,
            auto_dict_max_cardinality=2**31 - 1,
            column_types=widened,
        )
        parse = pa_csv.ParseOptions(newlines_in_values=True)
        reader = None
        try:
            reader = pa_csv.open_csv(
                stream, read_options=read_options, parse_options=parse, convert_options=convert
            )
            names = pandas_names(reader.schema.names) if names is None else names
            temporal = [
                name
                for name, field in zip(names, reader.schema, strict=True)
                if pa.types.is_temporal(field.type)
            ]
            if temporal:  # pyarrow parses dates and times (on the first block): text instead
                widened.update(dict.fromkeys(temporal, TEXT))
                continue
            batches = list(reader)
        except pa.ArrowInvalid as exc:
            found = _CONVERSION_ERROR.search(str(exc))
            if stream.problem is not None or stream.blank or reader is None or not found:
                stream.finish()  # its problem first: the parse error may only follow from it
                raise PandasOnly(str(exc)) from None
            assert names is not None
            field = reader.schema.field(int(found[1]))
            widened[names[int(found[1])]] = _wider(field.type, found[2])
            continue
        stream.finish()
        table = pa.Table.from_batches(batches, reader.schema)
        del batches
        return _pandas_types(table.rename_columns(names)), stream


def read_frame(
    open_stream: Callable[[], CheckedStream], label: str | None = None
) -> tuple[pd.DataFrame, CheckedStream]:
    """:func:`read_arrow`'s table as a pandas frame (text as categories but in ``label``,
    plain strings), converted a column at a time: each column's Arrow memory is freed (and
    given back) once converted, so the conversion needs room for one column, not for a
    second copy (2M rows: 165 -> 15 MB above the table)."""
    from atm_core.memory import give_back

    table, stream = read_arrow(open_stream)
    columns: dict[str, pd.Series] = {}
    while table.num_columns:
        name, column = table.column_names[0], table.column(0)
        table = table.remove_column(0)
        if name == label and pa.types.is_dictionary(column.type):
            column = column.cast(column.type.value_type)
        columns[name] = column.to_pandas()
        del column
        give_back(collect=False)
    return pd.DataFrame(columns, copy=False), stream


def _pandas_types(table: pa.Table) -> pa.Table:
    """An all-empty column (null type) as float, as pandas reads it."""
    for index, field in enumerate(table.schema):
        if pa.types.is_null(field.type):
            column = pa.nulls(len(table), pa.float64())
            table = table.set_column(index, field.with_type(pa.float64()), column)
    return table


def read_pandas(stream: CheckedStream, label: str | None = None) -> pd.DataFrame:
    """``pd.read_csv`` on a stream pyarrow could not parse (read to its end); its errors
    propagate. Text columns but ``label`` become categories, as :func:`read_frame` gives."""
    frame = pd.read_csv(io.BufferedReader(stream, BLOCK_BYTES), encoding="utf-8-sig")
    stream.finish()
    for name in frame.columns:
        if (
            name != label
            and pd.api.types.is_string_dtype(frame[name])
            and not pd.api.types.is_object_dtype(frame[name])
        ):
            frame[name] = frame[name].astype("category")
    return frame


def _wider(current: pa.DataType, value: str) -> pa.DataType:
    """The type a column of ``current`` type takes to hold ``value`` too."""
    candidates = [pa.int64(), pa.float64()] if pa.types.is_null(current) else [pa.float64()]
    if pa.types.is_integer(current) or pa.types.is_null(current):
        for candidate in candidates:
            try:
                pc.cast(pa.array([value.strip()]), candidate)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            return candidate
    if pa.types.is_null(current) and value in TRUE + FALSE:
        return pa.bool_()
    return TEXT
