"""An uploaded ``torch.save`` archive, checked before anything in it is unpickled.

``torch.load(weights_only=True)`` builds one Python object per pickle opcode, and an opcode can be one byte: a
pickle of 16 MiB can cost a gigabyte of memory. Nothing is unpickled here until the archive has been shown to
be what ``torch.save(state_dict, path)`` writes for the model it is checked against: a plain zip file (no
comment, no compression, no data before it), with a central directory, a pickle and a count of opcodes that
the model's number of tensors bounds. Unpickling then costs at most a small, fixed amount per tensor, and the
tensors themselves are at most as large as the body.
"""

from __future__ import annotations

import io
import pickletools
import struct
import zipfile

from search_spaces.ground.errors import ConfigError

#: Records of an archive besides one per tensor (data.pkl, version, byteorder, .format_version, ...).
EXTRA_RECORDS = 16
#: Bytes of central directory allowed per record (a record's entry is ~60 bytes plus its name).
DIRECTORY_BYTES_PER_RECORD = 512
#: Bytes of ``data.pkl`` allowed per tensor (a state dict's is ~100-140), and for the rest of it.
PICKLE_BYTES_PER_TENSOR, PICKLE_BYTES_BASE = 1024, 64 << 10
#: Pickle opcodes allowed per tensor (a state dict's pickle has ~35), and for the rest of it.
OPCODES_PER_TENSOR, OPCODES_BASE = 64, 4096

_EOCD = struct.Struct("<4sHHHHIIH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sIQI")
_ZIP64_EOCD = struct.Struct("<4sQHHIIQQQQ")
_NOT_AN_ARCHIVE = ("the upload is not a zip archive as torch.save writes it (a file of the legacy format, another "
                   "format or a damaged file); save the weights with torch.save(model.state_dict(), path)")


def check_archive(body: bytes, *, model: str, tensors: int) -> None:
    """Refuse ``body`` unless it is a ``torch.save`` archive whose unpickling the ``tensors`` tensors of the
    state dict of ``model`` bound.

    Raises:
        ConfigError: not such an archive, or one larger in records, directory, pickle or opcodes than a state
            dict of ``tensors`` tensors can be; the message says which limit.
    """
    records = tensors + EXTRA_RECORDS
    entries, directory = _directory_size(body)
    if entries > records or directory > records * DIRECTORY_BYTES_PER_RECORD:
        raise ConfigError(f"the upload does not fit model {model!r}: its zip archive lists {entries:,} records in "
                          f"{directory:,} bytes; a state dict of that model ({tensors} tensors) has at most "
                          f"{records:,} records in {records * DIRECTORY_BYTES_PER_RECORD:,} bytes")
    what = f"a state dict of model {model!r} ({tensors} tensors)"
    pickle = _data_pickle(body, limit=tensors * PICKLE_BYTES_PER_TENSOR + PICKLE_BYTES_BASE, what=what)
    _check_opcodes(pickle, limit=tensors * OPCODES_PER_TENSOR + OPCODES_BASE, what=what)


def _directory_size(body: bytes) -> tuple[int, int]:
    """The records and central directory bytes the archive's end records declare (the larger of each where a
    zip64 record repeats them); refused unless the archive ends with its end record and starts with a record."""
    if not body.startswith(b"PK\x03\x04") or len(body) < _EOCD.size:
        raise ConfigError(_NOT_AN_ARCHIVE)
    end = len(body) - _EOCD.size
    signature, _, _, here, entries, directory, _, comment = _EOCD.unpack_from(body, end)
    if signature != b"PK\x05\x06" or comment:
        raise ConfigError(_NOT_AN_ARCHIVE)
    locator = end - _ZIP64_LOCATOR.size
    if locator >= 0 and body[locator:locator + 4] == b"PK\x06\x07":
        record = locator - _ZIP64_EOCD.size
        _, _, offset, _ = _ZIP64_LOCATOR.unpack_from(body, locator)
        if record < 0 or offset != record or body[record:record + 4] != b"PK\x06\x06":
            raise ConfigError(_NOT_AN_ARCHIVE)
        fields = _ZIP64_EOCD.unpack_from(body, record)
        here, entries, directory = max(here, fields[6]), max(entries, fields[7]), max(directory, fields[8])
    return max(here, entries), directory


def _data_pickle(body: bytes, *, limit: int, what: str) -> bytes:
    """The archive's ``data.pkl``, once every record is stored uncompressed under one folder."""
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            if len(set(names)) != len(names):  # zipfile reads the last of two same-named records, torch may not
                twice = sorted({n for n in names if names.count(n) > 1})
                raise ConfigError(f"{_NOT_AN_ARCHIVE}: it holds more than one record named {twice[0]!r}")
            prefixes = {info.filename.split("/", 1)[0] for info in infos}
            if len(prefixes) != 1 or any(i.compress_type != zipfile.ZIP_STORED or i.file_size != i.compress_size
                                         for i in infos):
                raise ConfigError(f"{_NOT_AN_ARCHIVE}: its records must be stored uncompressed in one folder")
            info = archive.getinfo(f"{prefixes.pop()}/data.pkl")
            if info.file_size > limit:
                raise ConfigError(f"the upload's data.pkl is {info.file_size:,} bytes; {what} has at most "
                                  f"{limit:,}")
            return archive.read(info)
    except ConfigError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError) as exc:
        raise ConfigError(f"{_NOT_AN_ARCHIVE}: {exc}") from None


def _check_opcodes(pickle: bytes, *, limit: int, what: str) -> None:
    """Refuse a pickle of more than ``limit`` opcodes (each builds at most one object) or one that does not
    parse, read without building anything."""
    count = 0
    try:
        for _ in pickletools.genops(pickle):
            count += 1
            if count > limit:
                raise ConfigError(f"the upload's pickle has more than {limit:,} opcodes, more than {what} has "
                                  "(refused before unpickling: each would build an object)")
    except ConfigError:
        raise
    except Exception as exc:  # genops raises ValueError or struct errors on damaged data
        raise ConfigError(f"the upload's data.pkl is not a pickle: {exc}") from None
