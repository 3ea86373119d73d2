"""The Kimi K2 tokenizer: tiktoken BPE over `tiktoken.model`, special tokens named by `tokenizer_config.json`.

On-disk format (facts from K2's `tokenization_kimi.py`): `tiktoken.model` holds one line per base token,
`base64(token bytes) rank`; the N lines give ranks 0..N-1 and the 256 special tokens take ids N..N+255.
Their names come from `added_tokens_decoder` in `tokenizer_config.json`; an id there without a name is
`<|reserved_token_{id}|>`. Nothing here hardcodes K2's ids (163584..163839): a tiny test tokenizer with
1,000 base ranks has `<|im_end|>` at 1002, and every caller looks tokens up by name.

`encode` treats marker text such as a literal `<|im_end|>` in a file as ordinary bytes, so user, file and
tool text can never forge a turn boundary; only the chat renderer emits special ids, on purpose.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import tiktoken

from engine.errors import TokenizerError, TokenizerFileError, UnknownTokenError

TIKTOKEN_FILE = "tiktoken.model"
CONFIG_FILE = "tokenizer_config.json"
NUM_SPECIAL_TOKENS = 256

# Names of the K2 special tokens that kcode uses (DESIGN.md §2).
BOS = "[BOS]"
EOS = "[EOS]"
IM_END = "<|im_end|>"
IM_USER = "<|im_user|>"
IM_ASSISTANT = "<|im_assistant|>"
IM_SYSTEM = "<|im_system|>"
IM_MIDDLE = "<|im_middle|>"
TOOL_CALLS_SECTION_BEGIN = "<|tool_calls_section_begin|>"
TOOL_CALLS_SECTION_END = "<|tool_calls_section_end|>"
TOOL_CALL_BEGIN = "<|tool_call_begin|>"
TOOL_CALL_ARGUMENT_BEGIN = "<|tool_call_argument_begin|>"
TOOL_CALL_END = "<|tool_call_end|>"
UNK = "[UNK]"
PAD = "[PAD]"

# The split pattern, alternatives exactly as in K2's `tokenization_kimi.py` (`pat_str`). `&&` is class
# intersection, which tiktoken's fancy-regex engine understands (Python's `regex` only with the V1 flag).
K2_PAT_STR = "|".join(
    [
        r"[\p{Han}]+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)

# K2's tokenizer cuts text the same way before tiktoken sees it (tiktoken issue #195: very long runs of
# whitespace or non-whitespace make the regex pathological). Cutting where it cuts keeps our ids equal.
_MAX_CHUNK_CHARS = 400_000
_MAX_RUN_CHARS = 25_000
_RUN = re.compile(r"\s+|\S+")


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """Read `tiktoken.model`, insisting on what tiktoken silently assumes: unique tokens, ranks 0..N-1
    with no gaps (special ids start at N), and every single byte present (so any text can be encoded)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        raise TokenizerFileError(f"{path}: not found") from None
    ranks: dict[bytes, int] = {}
    line_of_rank: dict[int, int] = {}
    line_of_token: dict[bytes, int] = {}
    for lineno, raw in enumerate(lines, start=1):
        fields = raw.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) != 2:
            raise TokenizerFileError(f"{where}: expected 'base64 rank', got {raw[:80]!r}")
        try:
            token = base64.b64decode(fields[0], validate=True)
        except binascii.Error:
            raise TokenizerFileError(f"{where}: invalid base64 {fields[0][:40]!r}") from None
        if not fields[1].isdigit():
            raise TokenizerFileError(f"{where}: rank must be a non-negative integer, got {fields[1][:20]!r}")
        rank = int(fields[1])
        if not token:
            raise TokenizerFileError(f"{where}: empty token")
        if rank in line_of_rank:
            raise TokenizerFileError(f"{where}: rank {rank} already used on line {line_of_rank[rank]}")
        if token in line_of_token:
            raise TokenizerFileError(f"{where}: token {token!r} already listed on line {line_of_token[token]}")
        line_of_rank[rank] = lineno
        line_of_token[token] = lineno
        ranks[token] = rank
    _check_rank_set(path, ranks)
    return ranks


def _check_rank_set(path: Path, ranks: Mapping[bytes, int]) -> None:
    if not ranks:
        raise TokenizerFileError(f"{path}: no tokens")
    used = set(ranks.values())
    missing_rank = next((r for r in range(len(ranks)) if r not in used), None)
    if missing_rank is not None:
        raise TokenizerFileError(
            f"{path}: ranks must be 0..{len(ranks) - 1} without gaps; rank {missing_rank} is missing"
        )
    missing_byte = next((b for b in range(256) if bytes([b]) not in ranks), None)
    if missing_byte is not None:
        raise TokenizerFileError(f"{path}: single byte 0x{missing_byte:02x} has no rank")


def read_special_names(path: Path, num_base_tokens: int) -> dict[int, str]:
    """Names of the 256 special ids from `added_tokens_decoder`, `<|reserved_token_{id}|>` where unnamed."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokenizerFileError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerFileError(f"{path}: invalid JSON: {exc}") from None
    decoder = config.get("added_tokens_decoder") if isinstance(config, dict) else None
    if not isinstance(decoder, dict):
        raise TokenizerFileError(f"{path}: 'added_tokens_decoder' must be an object of id -> token")
    first, end = num_base_tokens, num_base_tokens + NUM_SPECIAL_TOKENS
    names = {i: f"<|reserved_token_{i}|>" for i in range(first, end)}
    ids_of_name: dict[str, int] = {}
    for key, entry in decoder.items():
        content = entry.get("content") if isinstance(entry, dict) else None
        if not key.isdigit() or not isinstance(content, str) or not content:
            raise TokenizerFileError(f"{path}: added token {key!r} needs an integer id and a 'content' string")
        token_id = int(key)
        if not first <= token_id < end:
            raise TokenizerFileError(
                f"{path}: added token {token_id} ({content}) lies outside the special range {first}..{end - 1} "
                f"implied by {num_base_tokens} base ranks in {TIKTOKEN_FILE}"
            )
        if content in ids_of_name:
            raise TokenizerFileError(f"{path}: {content} names both id {ids_of_name[content]} and id {token_id}")
        ids_of_name[content] = token_id
        names[token_id] = content
    return names


def _tiktoken_pieces(text: str) -> Iterator[str]:
    """Cut `text` where K2's tokenizer cuts it: every 400,000 chars, and inside any run of whitespace or of
    non-whitespace once the run reaches 25,000 chars."""
    for start in range(0, len(text), _MAX_CHUNK_CHARS):
        chunk = text[start : start + _MAX_CHUNK_CHARS]
        cuts = [0]
        for run in _RUN.finditer(chunk):
            cuts.extend(range(run.start() + _MAX_RUN_CHARS, run.end(), _MAX_RUN_CHARS))
        cuts.append(len(chunk))
        for a, b in itertools.pairwise(cuts):
            yield chunk[a:b]


class Tokenizer:
    """K2 BPE: ordinary text through tiktoken with the K2 pattern, 256 named special ids after the ranks."""

    def __init__(self, mergeable_ranks: dict[bytes, int], special_names: Mapping[int, str], name: str) -> None:
        self.num_base_tokens = len(mergeable_ranks)
        self.vocab_size = self.num_base_tokens + NUM_SPECIAL_TOKENS
        expected = set(range(self.num_base_tokens, self.vocab_size))
        if set(special_names) != expected:
            raise TokenizerError(f"special names must cover ids {self.num_base_tokens}..{self.vocab_size - 1} exactly")
        self._name_of: dict[int, str] = dict(special_names)
        self._id_of: dict[str, int] = {n: i for i, n in special_names.items()}
        self._encoding = tiktoken.Encoding(
            name=name,
            pat_str=K2_PAT_STR,
            mergeable_ranks=mergeable_ranks,
            special_tokens=self._id_of,
            explicit_n_vocab=self.vocab_size,
        )

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load `tiktoken.model` and `tokenizer_config.json` from a checkpoint directory."""
        directory = Path(path)
        ranks = read_tiktoken_ranks(directory / TIKTOKEN_FILE)
        names = read_special_names(directory / CONFIG_FILE, len(ranks))
        return cls(ranks, names, name=str(directory))

    def encode(self, text: str) -> list[int]:
        """Ordinary text to ids; marker text such as `<|im_end|>` stays bytes and never yields a special id."""
        ids: list[int] = []
        for piece in _tiktoken_pieces(text):
            ids.extend(self._encoding.encode_ordinary(piece))
        return ids

    def encode_with_specials(self, text: str) -> list[int]:
        """Trusted text (a rendered template) to ids, turning every special-token name into its id.

        Never use this on user, file or tool text: that is what lets a literal `<|im_end|>` forge a turn.
        """
        ids: list[int] = []
        for piece in _tiktoken_pieces(text):
            ids.extend(self._encoding.encode(piece, allowed_special="all"))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; special ids decode to their names, invalid UTF-8 to U+FFFD."""
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token; a special id gives its name's bytes."""
        name = self._name_of.get(token_id)
        if name is not None:
            return name.encode("utf-8")
        if not 0 <= token_id < self.num_base_tokens:
            raise UnknownTokenError(f"token id {token_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        return self._encoding.decode_single_token_bytes(token_id)

    def special_id(self, name: str) -> int:
        """The id of a special token by name, e.g. `special_id("<|im_end|>")`."""
        try:
            return self._id_of[name]
        except KeyError:
            raise UnknownTokenError(f"no special token named {name!r} in this vocabulary") from None

    def special_name(self, token_id: int) -> str | None:
        """The name of a special id, or None for an ordinary token."""
        return self._name_of.get(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._name_of

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """Generation stops on either: `<|im_end|>` ends a turn, `[EOS]` ends a document."""
        return (self.special_id(IM_END), self.special_id(EOS))

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids into text one id at a time, holding back the bytes of a character split across tokens."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text that is now complete; may be "" while a multi-byte character is still arriving."""
        if self._tokenizer.is_special(token_id):
            # A special id cannot continue a character: bytes still pending become U+FFFD.
            return self.flush() + self._tokenizer.token_bytes(token_id).decode("utf-8")
        return self._utf8.decode(self._tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: whatever bytes are still pending, as U+FFFD."""
        return self._utf8.decode(b"", final=True)
