"""Launch and memory planning for the CuPy backend, in plain Python (no CuPy needed).

Everything here is a function of shapes, dtype and a byte count, so it is
tested on any machine. Two rules keep GPU results deterministic:

* the batch is always processed in *row blocks* whose size depends only on the
  network and dtype, and gradients are summed block by block in order; a
  *chunk* (the rows whose activations are resident at once) is a whole number
  of blocks chosen from the free memory, so chunking never changes a bit;
* the slicing of the fused small-network kernels depends only on N and H.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GpuMemoryError, format_bytes
from ..network import Network

TINY_MAX_WIDTH = 8            # widest input / output of the fused kernels (NNX_TINY_MAX_WIDTH)
THREADS = 256                 # threads per block of every launch
MAX_BLOCKS = 8192             # grid-stride loops cover the rest
ONE_BLOCK_MAX_WORK = 8192     # N * H up to which whole passes run inside one thread block
ONE_BLOCK_MAX_PASSES = 4096   # passes per single-block launch (keeps one launch short)
TINY_TARGET_ITEMS = 1 << 16   # work items per fused launch to fill a data-centre GPU
TINY_MIN_SLICE = 32           # fewest hidden units / samples one fused work item handles
BLOCK_BYTES = 256 << 20       # activation bytes of one row block
MAX_BLOCK_ROWS = 1 << 20
HEADROOM_BYTES = 128 << 20    # left free for cuBLAS workspaces and the CUDA context
GRAPH_PASSES = 64             # passes captured in one CUDA graph




def grid_for(n_items: int) -> int:
    """Blocks of THREADS for a grid-stride loop over ``n_items`` (at least one)."""
    return max(1, min(MAX_BLOCKS, -(-n_items // THREADS)))


# ------------------------------------------------------------ small networks
def is_tiny(net: Network) -> bool:
    """One hidden layer of any width between narrow inputs and outputs (the fused kernels)."""
    return net.n_layers == 2 and net.n_inputs <= TINY_MAX_WIDTH and net.n_outputs <= TINY_MAX_WIDTH


@dataclass(frozen=True)
class TinyPlan:
    """How the fused kernels split one pass: H into ``slices_h``, the samples into ``slices_n``."""

    n: int
    d: int
    h: int
    c: int
    slices_h: int
    slices_n: int
    one_block: bool

    @property
    def grad_size(self) -> int:
        """Parameters per gradient slice: dW1 | db1 | dW2 | db2."""
        return self.d * self.h + self.h + self.h * self.c + self.c

    def workspace_elements(self) -> int:
        return self.slices_h * self.n * self.c + self.n * self.c + self.slices_n * self.grad_size + self.n


def plan_tiny(n: int, d: int, h: int, c: int) -> TinyPlan:
    """Slices that give each launch about TINY_TARGET_ITEMS work items, from N and H alone."""
    if n * h <= ONE_BLOCK_MAX_WORK:
        return TinyPlan(n, d, h, c, 1, max(1, min(n, THREADS // h)), True)
    slices_h = max(1, min(-(-TINY_TARGET_ITEMS // n), h // TINY_MIN_SLICE))
    slices_n = max(1, min(-(-TINY_TARGET_ITEMS // h), n // TINY_MIN_SLICE))
    return TinyPlan(n, d, h, c, slices_h, slices_n, False)


# ------------------------------------------------------------ dense networks
def row_bytes(net: Network) -> int:
    """Workspace bytes per sample row: activations, two delta buffers, a ones entry."""
    widths = net.layer_sizes[1:]
    return net.np_dtype.itemsize * (sum(widths) + 2 * max(widths) + 1)


def block_rows(net: Network) -> int:
    """Rows per block: the largest power of two whose activations fit in BLOCK_BYTES."""
    rows = max(1, BLOCK_BYTES // row_bytes(net))
    return min(MAX_BLOCK_ROWS, 1 << (rows.bit_length() - 1))


@dataclass(frozen=True)
class ChunkPlan:
    """Row blocks of ``block`` rows, ``chunk`` rows (whole blocks) resident at once."""

    n_samples: int
    block: int
    chunk: int

    @property
    def n_blocks(self) -> int:
        return -(-self.n_samples // self.block)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_samples // self.chunk)

    def blocks(self) -> list[tuple[int, int]]:
        """(start, stop) rows of every block, in the order gradients are summed."""
        return [(r, min(r + self.block, self.n_samples)) for r in range(0, self.n_samples, self.block)]

    def chunks(self) -> list[list[tuple[int, int]]]:
        """The blocks grouped into chunks, in order."""
        per = self.chunk // self.block
        blocks = self.blocks()
        return [blocks[i:i + per] for i in range(0, len(blocks), per)]


def fixed_bytes(net: Network, n_samples: int) -> int:
    """Workspace that does not scale with the chunk: gradients, per-sample loss and outputs."""
    n_params = sum(i * o + o for i, o in net.layer_shapes())
    return net.np_dtype.itemsize * (n_params + n_samples * (net.n_outputs + 1))


def plan_chunks(net: Network, n_samples: int, free_bytes: int, *, what: str = "training") -> ChunkPlan:
    """The largest chunk (whole blocks) whose workspace fits in ``free_bytes``.

    Raises GpuMemoryError, saying what one block needs, when not even one fits.
    """
    if n_samples < 1:
        raise ValueError("n_samples must be at least 1")
    block = min(block_rows(net), n_samples)
    n_blocks = -(-n_samples // block)
    budget = free_bytes - HEADROOM_BYTES - fixed_bytes(net, n_samples)
    per_chunk_block = block * row_bytes(net)
    fit = budget // per_chunk_block if budget > 0 else 0
    if fit < 1:
        needed = HEADROOM_BYTES + fixed_bytes(net, n_samples) + per_chunk_block
        raise GpuMemoryError(
            f"{what} of a {'-'.join(map(str, net.layer_sizes))} {net.dtype} network on {n_samples} samples "
            f"(one block of {block} rows)", needed, free_bytes,
            "Use dtype='float32', fewer hidden units or fewer samples, or free GPU memory held by other "
            "arrays or processes.")
    return ChunkPlan(n_samples, block, min(n_blocks, fit) * block)


def graph_blocks(passes: int, per_graph: int = GRAPH_PASSES) -> list[tuple[int, int]]:
    """(passes per graph, launches) that cover ``passes``: full blocks, then the rest."""
    full, rest = divmod(passes, per_graph)
    return [(n, k) for n, k in ((per_graph, full), (rest, 1 if rest else 0)) if k]


def data_bytes(net: Network, n_samples: int) -> int:
    """Bytes of the training data on the device (inputs and float targets)."""
    return net.np_dtype.itemsize * n_samples * (net.n_inputs + net.n_outputs)


__all__ = [
    "ChunkPlan", "GpuMemoryError", "TinyPlan", "block_rows", "data_bytes", "format_bytes", "graph_blocks",
    "grid_for", "is_tiny", "plan_chunks", "plan_tiny", "row_bytes",
]



def eager_launches_per_pass(net: Network, n_samples: int) -> int:
    """Kernel and cuBLAS launches of one pass without graphs (what one graph replays per pass).

    Fused small networks: logits, head, gradients, two updates. Otherwise, per
    row block of L layers: L products and L-1 bias+activation kernels forward,
    the head, 2 products per layer (dW, db) and a product plus a
    back-activation per hidden layer; then one update per layer.
    """
    if is_tiny(net):
        return 5
    layers = net.n_layers
    n_blocks = -(-n_samples // min(block_rows(net), n_samples))
    return n_blocks * (6 * layers - 2) + layers


def launches_per_pass(net: Network, n_samples: int, *, graphs: bool = True, per_graph: int = GRAPH_PASSES) -> float:
    """Launches the host issues per pass in a long run: the constant the launch-bound cases pay."""
    if is_tiny(net) and plan_tiny(n_samples, net.n_inputs, net.layer_sizes[1], net.n_outputs).one_block:
        return 1 / ONE_BLOCK_MAX_PASSES
    if graphs:
        return 1 / per_graph
    return float(eager_launches_per_pass(net, n_samples))
