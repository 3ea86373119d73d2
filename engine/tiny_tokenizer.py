"""A small but real K2-format tokenizer for tests: byte-level BPE learned from a built-in corpus.

`write_tiny_tokenizer` writes the same two files a K2 checkpoint ships (`tiktoken.model` and
`tokenizer_config.json` with all 256 special ids in `added_tokens_decoder`), so `Tokenizer.from_dir`
loads it on the same path as K2's; only the number of base ranks differs (1,000 by default, so
`<|im_end|>` is id 1002 and the vocabulary is 1,256). Training is deterministic and takes well under
a second, so tests and tiny model configs can rely on the exact vocabulary size.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.tokenizer import (
    BOS,
    CONFIG_FILE,
    EOS,
    IM_ASSISTANT,
    IM_END,
    IM_MIDDLE,
    IM_SYSTEM,
    IM_USER,
    NUM_SPECIAL_TOKENS,
    PAD,
    TIKTOKEN_FILE,
    TOOL_CALL_ARGUMENT_BEGIN,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_CALLS_SECTION_BEGIN,
    TOOL_CALLS_SECTION_END,
    UNK,
)

TINY_NUM_MERGES = 744
TINY_NUM_BASE_TOKENS = 256 + TINY_NUM_MERGES
TINY_VOCAB_SIZE = TINY_NUM_BASE_TOKENS + NUM_SPECIAL_TOKENS

# Offsets of the named specials from the first special id, as in K2 (163584 + offset, DESIGN.md §2).
K2_SPECIAL_OFFSETS: dict[int, str] = {
    0: BOS,
    1: EOS,
    2: IM_END,
    3: IM_USER,
    4: IM_ASSISTANT,
    10: IM_SYSTEM,
    11: TOOL_CALLS_SECTION_BEGIN,
    12: TOOL_CALLS_SECTION_END,
    13: TOOL_CALL_BEGIN,
    14: TOOL_CALL_ARGUMENT_BEGIN,
    15: TOOL_CALL_END,
    17: IM_MIDDLE,
    254: UNK,
    255: PAD,
}

# Written for kcode: English prose and Python, the kind of text the tiny model sees in tests.
DEFAULT_CORPUS = '''\
The agent reads the task, runs a command in the shell, looks at the output and decides what to do next.
When a test fails, it opens the file, finds the function that is wrong and edits only the lines it needs.
It never deletes work it did not write. It asks before it runs anything that could destroy the repository.
The user can stop the agent at any time; the agent then reports what it changed and what is still left.
Every tool returns text: the exit status, the standard output and the standard error, clamped to a limit.
A long file is shown one window at a time, with line numbers, so the model can point at the right place.
The engine loads the weights, builds the cache and streams tokens back to the client as they are made.
Each request gets its own sequence; the scheduler packs many sequences into one batch on the device.
Quantized weights keep a scale for every block of values, and the kernel multiplies them back while it works.
Patches are graded by applying them to a clean checkout, resetting the test files and running the suite.
Why did the build break? Because somebody upgraded a dependency without pinning its version, probably.
Please summarize yesterday's changes: which modules moved, which interfaces were renamed, who reviewed them.

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    elapsed_ms: float = field(default=0.0)

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens


async def stream_chunks(client, request):
    async with client.stream("POST", "/v1/chat/completions", json=request) as response:
        async for chunk in response.aiter_lines():
            if chunk.startswith("data: ") and chunk != "data: [DONE]":
                yield json.loads(chunk[6:])


while queue and budget > 0:
    item = queue.popleft()
    budget -= item.weight
    if item.retries >= MAX_RETRIES:
        raise RuntimeError(f"giving up on {item.key!r} after {item.retries} attempts")

def read_config(path: str) -> dict[str, object]:
    """Return the settings stored in a TOML file, or an empty mapping when the file does not exist."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}


class Session:
    def __init__(self, root: Path, timeout_s: float = 60.0) -> None:
        self.root = root
        self.timeout_s = timeout_s
        self.history: list[str] = []

    def run(self, command: str) -> Result:
        process = subprocess.run(command, shell=True, cwd=self.root, capture_output=True, text=True)
        self.history.append(command)
        return Result(status=process.returncode, stdout=process.stdout, stderr=process.stderr)


for index, line in enumerate(lines, start=1):
    if not line.strip():
        continue
    name, value = line.split("=", 1)
    settings[name.strip()] = value.strip()

$ git status --short
 M src/parser.py
?? tests/test_parser.py
$ python -m pytest tests/test_parser.py -q
..F.                                                                     [100%]
FAILED tests/test_parser.py::test_empty_input - AssertionError: expected [] but got None
1 failed, 3 passed in 0.12s

{"name": "bash", "arguments": {"command": "ls -la src/"}}
{"type": "function", "function": {"name": "view_file", "parameters": {"type": "object"}}}
'''

# A stdlib stand-in for the K2 split pattern, close enough on ASCII for choosing merges.
_TRAINING_SPLIT = re.compile(r"[^\r\n\w]?[A-Za-z]+|\d{1,3}| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class TinyTokenizerFiles:
    """Where the files went and the sizes a matching model config needs."""

    directory: Path
    num_base_tokens: int
    vocab_size: int


def learn_bpe(corpus: str, num_merges: int) -> list[bytes]:
    """Byte-level BPE: the 256 single bytes, then `num_merges` merged tokens, in rank order.

    Each step merges the most frequent adjacent pair (ties go to the lower token ids, so the result is
    deterministic); a pair whose bytes already form a token is merged without adding a new one.
    """
    if num_merges < 0:
        raise ValueError(f"num_merges must be >= 0, got {num_merges}")
    vocab = [bytes([b]) for b in range(256)]
    id_of = {token: i for i, token in enumerate(vocab)}
    counted = Counter(_TRAINING_SPLIT.findall(corpus))
    words = [list(piece.encode("utf-8")) for piece in counted]
    freqs = list(counted.values())
    pair_counts: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for w, word in enumerate(words):
        _count_pairs(word, freqs[w], w, pair_counts, where)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while len(vocab) < 256 + num_merges:
        pair = _pop_best(heap, pair_counts)
        if pair is None:
            raise ValueError(f"corpus allows only {len(vocab) - 256} merges, {num_merges} were asked for")
        merged = vocab[pair[0]] + vocab[pair[1]]
        if merged not in id_of:
            id_of[merged] = len(vocab)
            vocab.append(merged)
        for w in sorted(where.pop(pair, set())):
            touched = _count_pairs(words[w], -freqs[w], w, pair_counts, where)
            words[w] = _merge(words[w], pair, id_of[merged])
            touched |= _count_pairs(words[w], freqs[w], w, pair_counts, where)
            for p in touched:
                if pair_counts.get(p, 0) > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
    return vocab


def _count_pairs(
    word: list[int], delta: int, w: int, counts: Counter[tuple[int, int]], where: dict[tuple[int, int], set[int]]
) -> set[tuple[int, int]]:
    pairs = set(itertools.pairwise(word))
    for pair in itertools.pairwise(word):
        counts[pair] += delta
    for pair in pairs:
        if delta > 0:
            where.setdefault(pair, set()).add(w)
        elif counts[pair] <= 0:
            del counts[pair]
            where.pop(pair, None)
        else:
            where.get(pair, set()).discard(w)
    return pairs


def _pop_best(heap: list[tuple[int, tuple[int, int]]], counts: Counter[tuple[int, int]]) -> tuple[int, int] | None:
    """The most frequent pair; heap entries whose count has changed since they were pushed are stale."""
    while heap:
        negative, pair = heapq.heappop(heap)
        if counts.get(pair, 0) == -negative > 0:
            return pair
    return None


def _merge(word: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def tiny_config(num_base_tokens: int) -> dict[str, object]:
    """A `tokenizer_config.json` in K2's layout: every special id named, the K2 names at K2's offsets."""
    decoder = {}
    for offset in range(NUM_SPECIAL_TOKENS):
        token_id = num_base_tokens + offset
        content = K2_SPECIAL_OFFSETS.get(offset, f"<|reserved_token_{token_id}|>")
        decoder[str(token_id)] = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
    return {
        "added_tokens_decoder": decoder,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
        "tokenizer_class": "TikTokenTokenizer",
    }


def write_tiny_tokenizer(
    directory: str | Path, corpus: str | None = None, num_merges: int = TINY_NUM_MERGES
) -> TinyTokenizerFiles:
    """Learn BPE on `corpus` (the built-in one by default) and write both tokenizer files into `directory`."""
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    vocab = learn_bpe(DEFAULT_CORPUS if corpus is None else corpus, num_merges)
    lines = (f"{base64.b64encode(token).decode('ascii')} {rank}\n" for rank, token in enumerate(vocab))
    (target / TIKTOKEN_FILE).write_text("".join(lines), encoding="ascii")
    config = tiny_config(len(vocab))
    (target / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return TinyTokenizerFiles(target, len(vocab), len(vocab) + NUM_SPECIAL_TOKENS)
