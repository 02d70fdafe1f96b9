"""TFRecord files and ``tf.train.Example`` records in plain Python (no TensorFlow).

A TFRecord file is a sequence of records, each::

    uint64 length (little endian) | uint32 masked CRC-32C of length | data | uint32 masked CRC-32C of data

and TensorFlow Datasets stores each example as a serialized ``tf.train.Example``
protocol buffer: ``Features features = 1``, a map ``string -> Feature``, where a
``Feature`` is one of ``BytesList bytes_list = 1``, ``FloatList float_list = 2``
or ``Int64List int64_list = 3`` (each a ``repeated`` field 1, floats and ints
packed). :func:`parse_example` decodes that wire format directly;
:func:`encode_example` writes it (fixtures, conversions).
"""

from __future__ import annotations

import struct
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import numpy as np

FeatureValue = Union[List[bytes], np.ndarray]


# ---------------------------------------------------------------------------- CRC-32C


def _crc_table() -> List[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """The CRC as TFRecord stores it: rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------- records


def read_records(path: str, check_data_crc: bool = False) -> Iterator[bytes]:
    """The records of TFRecord file ``path``; ``ValueError`` on a corrupt or cut-short file.

    The length's CRC is always checked (it catches misframing); the data's CRC
    only with ``check_data_crc`` (pure Python, ~10 MB/s).
    """
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 12]
        if len(header) < 12:
            raise ValueError(f"{path}: truncated record header at byte {offset}")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc(header[:8]) != length_crc:
            raise ValueError(f"{path}: bad length checksum at byte {offset}; not a TFRecord file, or corrupt")
        record = data[offset + 12:offset + 12 + length]
        footer = data[offset + 12 + length:offset + 16 + length]
        if len(record) < length or len(footer) < 4:
            raise ValueError(f"{path}: truncated record at byte {offset}")
        if check_data_crc and masked_crc(record) != struct.unpack("<I", footer)[0]:
            raise ValueError(f"{path}: bad data checksum at byte {offset}")
        yield record
        offset += 16 + length


def write_records(path: str, records: Sequence[bytes]) -> None:
    """Write ``records`` to TFRecord file ``path``."""
    with open(path, "wb") as f:
        for record in records:
            header = struct.pack("<Q", len(record))
            f.write(header + struct.pack("<I", masked_crc(header)) + record
                    + struct.pack("<I", masked_crc(record)))


# ---------------------------------------------------------------------------- protobuf wire format


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint in a protocol buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Union[int, bytes]]]:
    """``(field number, wire type, value)`` of a message; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protocol buffer wire type {wire}")
        yield number, wire, value


def _parse_feature(buf: bytes) -> FeatureValue:
    for number, _, payload in _fields(buf):
        if number == 1:  # BytesList
            return [value for n, _, value in _fields(payload) if n == 1]
        if number == 2:  # FloatList: packed, or one float per field
            floats = bytearray()
            for n, wire, value in _fields(payload):
                if n == 1:
                    floats += value
            return np.frombuffer(bytes(floats), "<f4").copy()
        if number == 3:  # Int64List: packed varints, or one per field
            ints: List[int] = []
            for n, wire, value in _fields(payload):
                if n != 1:
                    continue
                if wire == 0:
                    ints.append(value)
                else:
                    pos = 0
                    while pos < len(value):
                        v, pos = _varint(value, pos)
                        ints.append(v)
            return np.array([v - (1 << 64) if v >= 1 << 63 else v for v in ints], np.int64)
    return []


def parse_example(record: bytes) -> Dict[str, FeatureValue]:
    """A serialized ``tf.train.Example`` -> ``{name: [bytes, ...] | float32 [n] | int64 [n]}``."""
    features: Dict[str, FeatureValue] = {}
    for number, _, payload in _fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(payload):
            if entry_number != 1:
                continue
            name, value = b"", b""
            for n, _, v in _fields(entry):
                if n == 1:
                    name = v
                elif n == 2:
                    value = v
            features[name.decode()] = _parse_feature(value)
    return features


def _key(number: int, wire: int) -> bytes:
    return _encode_varint((number << 3) | wire)


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _delimited(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _encode_varint(len(payload)) + payload


def encode_example(features: Dict[str, Union[bytes, str, int, float, Sequence]]) -> bytes:
    """Serialize ``{name: bytes | str | int | float | list of one kind}`` as a ``tf.train.Example``."""
    entries = b""
    for name, value in features.items():
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        if values and isinstance(values[0], (bytes, str)):
            body = b"".join(_delimited(1, v.encode() if isinstance(v, str) else v) for v in values)
            feature = _delimited(1, body)
        elif values and isinstance(values[0], (float, np.floating)):
            feature = _delimited(2, _delimited(1, np.asarray(values, "<f4").tobytes()))
        else:
            feature = _delimited(3, _delimited(1, b"".join(_encode_varint(int(v)) for v in values)))
        entries += _delimited(1, _delimited(1, name.encode()) + _delimited(2, feature))
    return _delimited(1, entries)
