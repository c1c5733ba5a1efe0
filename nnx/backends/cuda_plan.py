"""Launch and memory planning for the CuPy backend, in plain Python (no CuPy needed).

Everything here is a function of shapes, dtype and a byte count, so it is
tested on any machine. Two rules keep GPU results deterministic:

* the batch is always processed in *row blocks* whose size depends only on the
  network and dtype, and gradients are summed block by block in order; a
  *chunk* (the rows whose activations are resident at once) is a whole number
  of blocks chosen from the free memory, so chunking never changes a bit;
* the slicing of the fused small-network kernels depends only on the shapes
  and the dtype (never on the device), so the same problem sums in the same order
  on every GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import GpuMemoryError, format_bytes
from ..kernels.cuda_sources import one_block_threads, tiny_width
from ..network import Network

TINY_MAX_WIDTH = 8            # widest input / output of the fused kernels (NNX_TINY_MAX_WIDTH)
THREADS = 256                 # threads per block of every grid-stride launch
MAX_BLOCKS = 8192             # grid-stride loops cover the rest
ONE_BLOCK_MAX_WORK = 8192     # N * H up to which whole passes may run inside one thread block
ONE_BLOCK_SMEM_BYTES = 48 << 10  # shared memory one block gets without opting in: the single-block
#                                  kernel's data, parameters, activations and partial sums must fit
ONE_BLOCK_MAX_PASSES = 4096   # passes per single-block launch (keeps one launch short)
# Work items per sliced launch: an H100/H200 holds 132 SMs x 2,048 = 270k resident threads,
# so 2^18 items (1,024 blocks of 256) give every SM several blocks at once.
TINY_TARGET_ITEMS = 1 << 18
TINY_MIN_SLICE = 32           # fewest hidden units / samples one fused work item handles
BLOCK_BYTES = 256 << 20       # activation bytes of one row block
MAX_BLOCK_ROWS = 1 << 20
HEADROOM_BYTES = 128 << 20    # left free for cuBLAS workspaces and the CUDA context
GRAPH_PASSES = 64             # passes captured in one CUDA graph
# Kernel nodes per captured graph at most: instantiating and uploading a graph costs
# time and memory per node, and a chunked pass of a big network can launch 10^4 kernels.
MAX_GRAPH_NODES = 2048




def grid_for(n_items: int) -> int:
    """Blocks of THREADS for a grid-stride loop over ``n_items`` (at least one)."""
    return max(1, min(MAX_BLOCKS, -(-n_items // THREADS)))


# ------------------------------------------------------------ small networks
def is_tiny(net: Network) -> bool:
    """One hidden layer of any width between narrow inputs and outputs (the fused kernels)."""
    return net.n_layers == 2 and net.n_inputs <= TINY_MAX_WIDTH and net.n_outputs <= TINY_MAX_WIDTH


@dataclass(frozen=True)
class TinyPlan:
    """How the fused kernels split one pass: H into ``slices_h``, the samples into ``slices_n``.

    With ``one_block``, whole passes run in one block of ``threads`` threads, where
    ``lanes`` threads add up the slices of each parameter's gradient.
    """

    n: int
    d: int
    h: int
    c: int
    slices_h: int
    slices_n: int
    one_block: bool
    threads: int = THREADS
    lanes: int = 1

    @property
    def grad_size(self) -> int:
        """Parameters per gradient slice: dW1 | db1 | dW2 | db2."""
        return self.d * self.h + self.h + self.h * self.c + self.c

    @property
    def width(self) -> int:
        """The kernels' width instance W (inputs and outputs at most W wide)."""
        return tiny_width(self.d, self.c)

    def workspace_elements(self) -> int:
        return self.slices_h * self.n * self.c + self.n * self.c + self.slices_n * self.grad_size + self.n

    def one_block_elements(self) -> int:
        """Shared-memory elements of the single-block kernel (the layout in tiny_mlp.cu):
        X | targets | parameters | activations | delta | partial logits | partial gradients."""
        n, d, h, c = self.n, self.d, self.h, self.c
        parts = self.slices_h * n * c if self.slices_h > 1 else 0
        return n * d + n * c + self.grad_size + n * h + n * c + parts + self.slices_n * self.grad_size

    def shared_bytes(self, itemsize: int) -> int:
        return self.one_block_elements() * itemsize


def _power_of_two_at_most(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def plan_one_block(n: int, d: int, h: int, c: int, itemsize: int) -> TinyPlan | None:
    """The single-block plan, or None when its shared memory would not fit.

    Threads: 256 up to 256 samples, else as many as the kernel's registers allow
    (512 up to width 4). Hidden slices give idle threads part of each sample's
    hidden units when there are fewer samples than threads; sample slices give
    each hidden unit as many threads as fit, fewer if shared memory runs short;
    ``lanes`` threads (a power of two up to 32) add up each parameter's slices.
    """
    width = tiny_width(d, c)
    threads = THREADS if n <= THREADS else one_block_threads(width)
    slices_h = max(1, min(h, threads // n))
    slices_n = max(1, min(n, threads // h))
    while True:
        size = d * h + h + h * c + c
        lanes = min(32, _power_of_two_at_most(threads // size), _power_of_two_at_most(slices_n))
        tiny = TinyPlan(n, d, h, c, slices_h, slices_n, True, threads, lanes)
        if tiny.shared_bytes(itemsize) <= ONE_BLOCK_SMEM_BYTES:
            return tiny
        if slices_n == 1:
            return None
        slices_n = (slices_n + 1) // 2


def plan_tiny(n: int, d: int, h: int, c: int, itemsize: int = 8) -> TinyPlan:
    """One block when N x H is small and its shared memory fits, else slices that give each
    launch about TINY_TARGET_ITEMS work items, from the shapes alone."""
    if n * h <= ONE_BLOCK_MAX_WORK:
        tiny = plan_one_block(n, d, h, c, itemsize)
        if tiny is not None:
            return tiny
    slices_h = max(1, min(-(-TINY_TARGET_ITEMS // n), h // TINY_MIN_SLICE))
    slices_n = max(1, min(-(-TINY_TARGET_ITEMS // h), n // TINY_MIN_SLICE))
    return TinyPlan(n, d, h, c, slices_h, slices_n, False)


def plan_tiny_net(net: Network, n_samples: int) -> TinyPlan:
    """``plan_tiny`` for a small network's shapes and dtype."""
    return plan_tiny(n_samples, net.n_inputs, net.layer_sizes[1], net.n_outputs, net.np_dtype.itemsize)


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


def passes_per_graph(launches: int, per_graph: int = GRAPH_PASSES, max_nodes: int = MAX_GRAPH_NODES) -> int:
    """Passes captured per graph for a pass of ``launches`` kernels: ``per_graph``, fewer when
    the graph would exceed ``max_nodes``; 0 when even one pass would (then passes run eagerly,
    where their launches are few against their work)."""
    return min(per_graph, max_nodes // max(1, launches))


def graph_blocks(passes: int, per_graph: int = GRAPH_PASSES) -> list[tuple[int, int]]:
    """(passes per graph, launches) that cover ``passes``: full blocks, then the rest."""
    full, rest = divmod(passes, per_graph)
    return [(n, k) for n, k in ((per_graph, full), (rest, 1 if rest else 0)) if k]


def data_bytes(net: Network, n_samples: int) -> int:
    """Bytes of the training data on the device (inputs and float targets)."""
    return net.np_dtype.itemsize * n_samples * (net.n_inputs + net.n_outputs)


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
    """Launches the host issues per pass in a long run: the constant the launch-bound cases pay.

    ``graphs=False`` (switched off, or capture impossible) counts every launch of a pass.
    """
    if is_tiny(net) and plan_tiny_net(net, n_samples).one_block:
        return 1 / ONE_BLOCK_MAX_PASSES
    eager = eager_launches_per_pass(net, n_samples)
    captured = passes_per_graph(eager, per_graph) if graphs else 0
    return 1 / captured if captured else float(eager)


__all__ = [
    "ChunkPlan", "GpuMemoryError", "TinyPlan", "block_rows", "data_bytes", "eager_launches_per_pass",
    "format_bytes", "graph_blocks", "grid_for", "is_tiny", "launches_per_pass", "passes_per_graph", "plan_chunks",
    "plan_one_block", "plan_tiny", "plan_tiny_net", "row_bytes",
]
