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
from ..kernels import cuda_sources as src
from ..kernels.cuda_sources import one_block_threads, tiny_width
from ..network import Network

TINY_MAX_WIDTH = src.TINY_MAX_WIDTH  # widest input / output of the fused kernels
THREADS = 256                 # threads per block of every grid-stride launch
MAX_BLOCKS = 8192             # grid-stride loops cover the rest
ONE_BLOCK_MAX_WORK = 8192     # rows x H of an update up to which whole updates may run in one thread block
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
    """How the fused kernels split one update: H into ``slices_h``, the rows into ``slices_n``.

    ``n`` rows of X are read: all samples, or for a sliced minibatch plan the
    batch buffer's rows. An update trains on ``batch_rows`` of them at most
    (``rows``; 0 means all ``n``). With ``one_block``, whole updates run in one
    block of ``threads`` threads, where ``lanes`` threads add up the slices of
    each parameter's gradient; its shared memory also holds the optimiser's
    ``slots`` state arrays and, when ``batched``, the batch's sample indices.
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
    rows: int = 0
    slots: int = 0
    batched: bool = False

    @property
    def batch_rows(self) -> int:
        """Rows one update trains on at most."""
        return self.rows or self.n

    @property
    def grad_size(self) -> int:
        """Parameters per gradient slice: dW1 | db1 | dW2 | db2."""
        return self.d * self.h + self.h + self.h * self.c + self.c

    @property
    def width(self) -> int:
        """The kernels' width instance W (inputs and outputs at most W wide)."""
        return tiny_width(self.d, self.c)

    def workspace_elements(self) -> int:
        """Device buffers of the sliced kernels: partial logits, deltas, partial gradients, row losses."""
        return self.slices_h * self.n * self.c + self.n * self.c + self.slices_n * self.grad_size + self.n

    def one_block_elements(self) -> int:
        """Shared-memory elements of T in the single-block kernel (the layout in tiny_mlp.cu): X | targets |
        parameters | optimiser state | activations | delta | partial logits | partial gradients."""
        n, m, d, h, c = self.n, self.batch_rows, self.d, self.h, self.c
        parts = self.slices_h * m * c if self.slices_h > 1 else 0
        return (n * d + n * c + (1 + self.slots) * self.grad_size + m * h + m * c + parts
                + self.slices_n * self.grad_size)

    def shared_bytes(self, itemsize: int) -> int:
        """The single-block kernel's dynamic shared memory: two update records and the optimiser's
        settings, the elements above, and the batch's sample indices (int32) when batched."""
        records = 2 * (8 * len(src.COUNTERS) + itemsize * src.COEF_COUNT) + src.OPTIMIZER_BYTES
        return records + self.one_block_elements() * itemsize + (4 * self.batch_rows if self.batched else 0)


def _power_of_two_at_most(x: int) -> int:
    return 1 << (max(1, x).bit_length() - 1)


def plan_one_block(n: int, d: int, h: int, c: int, itemsize: int, rows: int | None = None, slots: int = 0,
                   batched: bool = False, threads: int | None = None) -> TinyPlan | None:
    """The single-block plan, or None when its shared memory would not fit.

    ``rows`` is the most rows one update trains on (a minibatch; all ``n`` by
    default). Threads: 256 up to 256 rows, else as many as the kernel's
    registers allow (512 up to width 4); ``threads`` (a multiple of 32 within
    that bound) overrides the choice, for the GPU check's timing of neighbours.
    Hidden slices give idle threads part of each row's hidden units when there
    are fewer rows than threads; row slices give each hidden unit as many
    threads as fit, fewer if shared memory runs short; ``lanes`` threads (a
    power of two up to 32) add up each parameter's slices.
    """
    m = n if rows is None else rows
    width = tiny_width(d, c)
    if threads is None:
        threads = THREADS if m <= THREADS else one_block_threads(width)
    elif threads % 32 or not 32 <= threads <= one_block_threads(width):
        raise ValueError(f"threads must be a multiple of 32 from 32 to {one_block_threads(width)}, not {threads}")
    slices_h = max(1, min(h, threads // m))
    slices_n = max(1, min(m, threads // h))
    while True:
        size = d * h + h + h * c + c
        lanes = min(32, _power_of_two_at_most(threads // size), _power_of_two_at_most(slices_n))
        tiny = TinyPlan(n, d, h, c, slices_h, slices_n, True, threads, lanes, 0 if rows is None else rows, slots,
                        batched)
        if tiny.shared_bytes(itemsize) <= ONE_BLOCK_SMEM_BYTES:
            return tiny
        if slices_n == 1:
            return None
        slices_n = (slices_n + 1) // 2


def plan_tiny(n: int, d: int, h: int, c: int, itemsize: int = 8, rows: int | None = None, slots: int = 0) -> TinyPlan:
    """One block when an update's rows x H is small and its shared memory fits, else slices that
    give each launch about TINY_TARGET_ITEMS work items, from the shapes alone.

    ``rows`` is a minibatch's most rows (None: full batch over ``n``); ``slots`` the optimiser's
    state arrays per parameter. A sliced minibatch plan is over the batch buffer's ``rows``.
    """
    m = n if rows is None else rows
    if m * h <= ONE_BLOCK_MAX_WORK:
        tiny = plan_one_block(n, d, h, c, itemsize, rows, slots, batched=rows is not None)
        if tiny is not None:
            return tiny
    slices_h = max(1, min(-(-TINY_TARGET_ITEMS // m), h // TINY_MIN_SLICE))
    slices_n = max(1, min(-(-TINY_TARGET_ITEMS // h), m // TINY_MIN_SLICE))
    return TinyPlan(m, d, h, c, slices_h, slices_n, False)


def plan_tiny_net(net: Network, n_samples: int, rows: int | None = None, slots: int = 0) -> TinyPlan:
    """``plan_tiny`` for a small network's shapes and dtype."""
    return plan_tiny(n_samples, net.n_inputs, net.layer_sizes[1], net.n_outputs, net.np_dtype.itemsize, rows, slots)


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


TINY_PROGRAM_LAUNCHES = 5  # a sliced small-network update: logits, head, gradients, two updates


def program_launches(net: Network, rows: int) -> int:
    """Kernel and cuBLAS launches that compute one update's gradients on ``rows`` rows and apply it.

    Fused small networks: logits, head, gradients, two updates. Otherwise, per
    row block of L layers: L products and L-1 bias+activation kernels forward,
    the head, 2 products per layer (dW, db) and a product plus a back-activation
    per hidden layer; then one update per layer.
    """
    if is_tiny(net):
        return TINY_PROGRAM_LAUNCHES
    layers = net.n_layers
    n_blocks = -(-rows // min(block_rows(net), rows))
    return n_blocks * (6 * layers - 2) + layers


def eager_launches_per_pass(net: Network, n_samples: int, batch_rows: int | None = None) -> int:
    """Launches of one update without graphs (what one graph replays per update): nnx_begin_update,
    nnx_gather_rows for a minibatch (of at most ``batch_rows`` rows), then ``program_launches``."""
    if batch_rows is None:
        return 1 + program_launches(net, n_samples)
    return 2 + program_launches(net, batch_rows)


def launches_per_pass(net: Network, n_samples: int, *, graphs: bool = True, per_graph: int = GRAPH_PASSES,
                      batch_rows: int | None = None, slots: int = 0) -> float:
    """Launches the host issues per update in a long run: the constant the launch-bound cases pay.

    ``graphs=False`` (switched off, or capture impossible) counts every launch of an update;
    ``batch_rows`` and ``slots`` (a minibatch's rows, the optimiser's state arrays) decide
    whether a small network's updates fit the single-block kernel.
    """
    if is_tiny(net) and plan_tiny_net(net, n_samples, batch_rows, slots).one_block:
        return 1 / ONE_BLOCK_MAX_PASSES
    eager = eager_launches_per_pass(net, n_samples, batch_rows)
    captured = passes_per_graph(eager, per_graph) if graphs else 0
    return 1 / captured if captured else float(eager)


__all__ = [
    "ChunkPlan", "GpuMemoryError", "TinyPlan", "block_rows", "data_bytes", "eager_launches_per_pass",
    "format_bytes", "graph_blocks", "grid_for", "is_tiny", "launches_per_pass", "passes_per_graph", "plan_chunks",
    "plan_one_block", "plan_tiny", "plan_tiny_net", "program_launches", "row_bytes",
]
