"""tf.train.Example records in TFRecord files, written and counted without TensorFlow.

`t0-cache`'s Beam workers render, tokenize and write whole cache shards; importing TensorFlow
in each of them would cost seconds and hundreds of MiB per worker, so this module speaks the two
formats directly:

Example   `serialize_example({name: value})`: the bytes of a `tensorflow.Example` proto, built
          with protobuf's own C runtime from a private copy of TensorFlow's `example.proto`
          (same field numbers, so TensorFlow parses it). Values as seqio's `dict_to_tfexample`
          stores them: str/bytes (or a list of them) -> bytes_list, int/bool (or an int array)
          -> int64_list, float -> float_list.
TFRecord  `RecordWriter(file)`: each record is `length (uint64 LE) | masked crc32c(length) |
          data | masked crc32c(data)`; `count_records(path)` reads a file sequentially (fine on
          object stores) and checks every CRC, so a count is also an integrity check.
"""
from __future__ import annotations

import struct
from typing import Mapping

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from t0_jax import storage

_READ_BLOCK = 8 << 20


class RecordFileError(ValueError):
    """A TFRecord file is truncated or fails its checksums."""


def _example_classes():
    """(Example, Feature) message classes from a private pool (TensorFlow may also be loaded
    in this process with the same full names in the default pool)."""
    proto = descriptor_pb2.FileDescriptorProto(name="t0_jax_example.proto", package="tensorflow",
                                               syntax="proto3")
    fields = descriptor_pb2.FieldDescriptorProto
    repeated, optional = fields.LABEL_REPEATED, fields.LABEL_OPTIONAL
    for name, kind in (("BytesList", fields.TYPE_BYTES), ("FloatList", fields.TYPE_FLOAT),
                       ("Int64List", fields.TYPE_INT64)):
        message = proto.message_type.add(name=name)
        message.field.add(name="value", number=1, label=repeated, type=kind)
        if kind != fields.TYPE_BYTES:
            message.field[0].options.packed = True
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, name in ((1, "bytes_list"), (2, "float_list"), (3, "int64_list")):
        type_name = ".tensorflow." + "".join(p.capitalize() for p in name.split("_"))
        feature.field.add(name=name, number=number, label=optional, type=fields.TYPE_MESSAGE,
                          type_name=type_name.replace("list", "List"), oneof_index=0)
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, label=optional, type=fields.TYPE_STRING)
    entry.field.add(name="value", number=2, label=optional, type=fields.TYPE_MESSAGE,
                    type_name=".tensorflow.Feature")
    features.field.add(name="feature", number=1, label=repeated, type=fields.TYPE_MESSAGE,
                       type_name=".tensorflow.Features.FeatureEntry")
    example = proto.message_type.add(name="Example")
    example.field.add(name="features", number=1, label=optional, type=fields.TYPE_MESSAGE,
                      type_name=".tensorflow.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.{n}"))
                 for n in ("Example", "Feature"))


Example, Feature = _example_classes()


def serialize_example(values: Mapping[str, object]) -> bytes:
    """The serialized tf.train.Example of `values` (see the module docstring for the types)."""
    example = Example()
    features = example.features.feature
    for key, value in values.items():
        feature = features[key]
        if isinstance(value, (str, bytes)):
            feature.bytes_list.value.append(_utf8(value))
        elif isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray)
                                                   and value.dtype == object):
            feature.bytes_list.SetInParent()
            feature.bytes_list.value.extend([_utf8(v) for v in value])
        elif isinstance(value, (float, np.floating)):
            feature.float_list.value.append(float(value))
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
            feature.float_list.SetInParent()
            feature.float_list.value.extend(value.ravel().tolist())
        elif isinstance(value, np.ndarray):  # integer or bool arrays (bool stored as 0/1)
            feature.int64_list.SetInParent()
            feature.int64_list.value.extend(value.ravel().astype(np.int64, copy=False).tolist())
        else:  # bool, int scalars
            feature.int64_list.value.append(int(value))
    return example.SerializeToString()


def _utf8(value) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class RecordWriter:
    """TFRecord framing onto an open binary file object (local or `storage.open`)."""

    def __init__(self, file):
        self.file, self.records = file, 0

    def write(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self.file.write(length + struct.pack("<I", _masked_crc(length)) + data
                        + struct.pack("<I", _masked_crc(data)))
        self.records += 1


def count_records(path: str) -> int:
    """Records in the TFRecord file `path`, every length and data CRC checked (RecordFileError
    names the file and byte offset of the first bad record)."""
    count, offset, buffer = 0, 0, b""
    with storage.open(path, "rb") as file:
        while True:
            block = file.read(_READ_BLOCK)
            buffer, at = buffer + block, 0  # `at`: start of the next record in `buffer`
            while len(buffer) - at >= 12:
                header = buffer[at:at + 8]
                if struct.unpack_from("<I", buffer, at + 8)[0] != _masked_crc(header):
                    raise RecordFileError(f"{path}: the length of the record at byte "
                                          f"{offset + at} fails its CRC: the file is corrupt.")
                end = at + 12 + struct.unpack("<Q", header)[0] + 4
                if len(buffer) < end:
                    break
                if struct.unpack_from("<I", buffer, end - 4)[0] != _masked_crc(
                        buffer[at + 12:end - 4]):
                    raise RecordFileError(f"{path}: the record at byte {offset + at} fails its "
                                          "data CRC: the file is corrupt.")
                at, count = end, count + 1
            buffer, offset = buffer[at:], offset + at
            if not block:
                break
    if buffer:
        raise RecordFileError(f"{path}: {len(buffer)} bytes at byte {offset} are not a whole "
                              "record: the file is truncated.")
    return count
