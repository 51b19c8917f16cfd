"""A table kept compressed in memory: its codec's stored tensors, decoded row by row.

``CompressedTable(codec, rows, width)`` holds, as buffers, exactly what the codec stores for a
(rows, width) table, allocated empty at their stored dtypes (no float32 copy of the table is
made), and is called like ``nn.Embedding``: ``table(index)`` decodes the rows ``index`` gathers,
(..., width) float32. ``fill(table)`` encodes a float32 table into it. A field embedding builds
one for every field whose schema names a codec (``FieldSpec.codec``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from slimctr.compress.codecs import Stored, parse, stored_bytes


class CompressedTable(nn.Module):
    def __init__(self, codec: str, rows: int, width: int) -> None:
        super().__init__()
        self.codec = parse(codec)
        self.rows, self.width = rows, width
        self._keys: dict[str, str] = {}  # stored name -> buffer name (no dots in buffer names)
        for key, (shape, dtype) in self.codec.layout(rows, width).items():
            self._keys[key] = key.replace(".", "__")
            self.register_buffer(self._keys[key], torch.empty(shape, dtype=dtype))

    @property
    def stored(self) -> Stored:
        return {key: getattr(self, name) for key, name in self._keys.items()}

    @property
    def stored_bytes(self) -> int:
        return stored_bytes(self.stored)

    @torch.no_grad()
    def fill(self, table: Tensor) -> None:
        """Encode the float32 ``table`` (rows, width) into the stored tensors."""
        encoded = self.codec.encode(table.detach().float())
        for key, name in self._keys.items():
            getattr(self, name).copy_(encoded[key])

    def forward(self, index: Tensor) -> Tensor:
        return self.codec.decode(self.stored, index.long(), self.width)

    def decoded(self) -> Tensor:
        """The whole table, decoded: (rows, width) float32."""
        return self.forward(torch.arange(self.rows))
