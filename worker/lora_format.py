"""Is a download a LoRA ComfyUI can load? A whole safetensors file whose tensors are named like a LoRA's.

The format's rules are :mod:`worker.safetensors`'; the one added here is the names (:data:`LORA_NAMES`).
:class:`LoraSniffer` is fed the download as it arrives, so an HTML page, a pickle or a full model
is refused at its first bytes or at the end of its header, not after gigabytes. Every refusal is a
:class:`NotALora` whose text says what the data is instead, when that can be told.
"""

from __future__ import annotations

import re

from worker.safetensors import Header, NotSafetensors, parse_header, quote

#: Tensor-name parts ComfyUI's LoRA loader patches with, as the message lists them.
LORA_NAMES = "lora_down/lora_up, lora_A/lora_B or diff/diff_b"
#: A LoRA's header is a few hundred kB (a few thousand tensors and training metadata); parsing JSON
#: costs about 20 times its size, so this bounds it near 170 MB, where the library's 100 MB allows 2 GB.
LORA_MAX_HEADER_BYTES = 8 * 2**20
#: What a LoRA URL must serve, for the "(allowed: …)" part of messages.
LORA_ALLOWED = f"a LoRA in .safetensors format, its tensors named with {LORA_NAMES}"

_LORA_TENSOR = re.compile(
    r"(?:^|[._])lora[._](?:down|up|A|B)(?:[._]|$)"  # kohya lora_down/lora_up, PEFT lora_A/lora_B, lora.down
    r"|lora_linear_layer\.(?:down|up)\."  # diffusers' attention processors
    r"|\.diff(?:_b)?$"  # whole-weight differences (ComfyUI's "diff" patches)
    r"|\.(?:hada_w[12]_[ab]|lokr_w[12](?:_[ab])?)$"  # LoHa and LoKr, which ComfyUI's LoRA loader also takes
)


class NotALora(ValueError):
    """The data cannot be used as a LoRA; the text says why (and what it is, when known)."""


class LoraSniffer:
    """Checks a download chunk by chunk (:meth:`feed`), then as a whole (:meth:`finish`)."""

    def __init__(self) -> None:
        self._head = bytearray()
        self.header: Header | None = None
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes; raise :class:`NotALora` as soon as they show the file is no LoRA."""
        self.received += len(chunk)
        if self.header is None:
            self._head += chunk
            self._take_header(complete=False)
        if self.header is not None and self.received > self.header.file_bytes:
            raise NotALora(
                f"a damaged safetensors file: it goes on past the {self.header.file_bytes} bytes its header "
                "declares (the last tensor must end the file)"
            )

    def finish(self) -> Header:
        """The header of the complete file; raise :class:`NotALora` if the file is not whole."""
        if self.header is None:
            self._take_header(complete=True)
        assert self.header is not None  # a complete head gives its header or is refused
        if self.received < self.header.file_bytes:
            raise NotALora(f"a truncated safetensors file: {self.received} bytes, its header declares {self.header.file_bytes}")
        return self.header

    def _take_header(self, complete: bool) -> None:
        try:
            header = parse_header(self._head, complete=complete, max_header_bytes=LORA_MAX_HEADER_BYTES)
        except NotSafetensors as exc:
            raise NotALora(str(exc)) from None
        if header is not None:
            check_lora(header)
            self.header, self._head = header, bytearray()  # the header was all there was to keep


def lora_tensors(header: Header) -> list[str]:
    """The names of the tensors named like a LoRA's."""
    return [name for name in header.tensors if _LORA_TENSOR.search(name)]


def check_lora(header: Header) -> None:
    """Raise :class:`NotALora` unless some tensor is named like a LoRA's."""
    if lora_tensors(header):
        return
    if not header.tensors:
        raise NotALora("a safetensors file that holds no tensors")
    example = next(iter(header.tensors))
    count = len(header.tensors)
    raise NotALora(
        f"a safetensors file of {count} tensor{'s' if count != 1 else ''} and none named like a LoRA's "
        f"(e.g. {quote(example)}): a model checkpoint, not a LoRA"
    )
