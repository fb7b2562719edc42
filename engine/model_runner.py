import os
import time
from dataclasses import dataclass

import torch

from kvant.engine.context import Context, set_context
from kvant.engine.decode_inputs import DecodeInputs
from kvant.engine.config import EngineConfig
from kvant.artifact.errors import KvantError
from kvant.engine.memory import (PROMPT_LOGPROB_ROWS, MemoryPlan, capped_total, kv_bytes_per_token, plan_fixed,
                                 plan_memory)
from kvant.engine.model import CausalLM
from kvant.engine.sampler import Sampler, SamplerOutput, graph_samplable, top_logprobs
from kvant.engine.scheduler import ScheduledBatch
from kvant.engine.sequence import Sequence
from kvant.kernels.cpu_attention import plan_cpu_step
from kvant.kernels.formats import FP8
from kvant.kernels.sampling import pending_input_ids, sample_tokens

# default KV pool on CPU: room for max_num_seqs full-length sequences, at most 1 GiB, at least one sequence
CPU_KV_CACHE_BYTES = 1 << 30


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    # nano-vllm's set: 1, 2, 4, 8, then every 16
    sizes = [1, 2, 4, 8] + list(range(16, 513, 16))
    return [b for b in sizes if b < max_num_seqs] + [max_num_seqs] if max_num_seqs <= 512 else sizes


@dataclass(slots=True)
class DecodeLaunch:
    """A decode step handed to the device whose sampled tokens the host has not read yet (async scheduling)."""
    seqs: list[Sequence]
    rows: dict[int, int]  # seq_id -> its row of the step's tokens
    tokens: torch.Tensor  # [len(seqs)] int64 on the host: a pinned copy still being filled until `done`
    done: torch.cuda.Event | None  # None: the tokens are final (an eager step)


class ModelRunner:
    """Owns the device tensors: the KV pool, the flat step inputs, CUDA graphs for decode, and the sampler."""

    def __init__(self, model: CausalLM, config: EngineConfig, max_model_len: int):
        self.model = model
        self.config = config
        self.max_model_len = max_model_len
        self.block_size = config.block_size
        self.device = next(model.parameters()).device
        self.dtype = model.model.embed_tokens.weight.dtype
        mc = model.config
        self.kv_dtype = FP8 if config.kv_cache_dtype == "fp8" else self.dtype
        self.max_blocks_per_seq = -(-max_model_len // self.block_size)
        self.use_graphs = self.device.type == "cuda" and not config.enforce_eager
        # CPU: rope rows, cache rows and masks once per step (kernels.cpu_attention); an fp8 cache takes the
        # general torch path
        self.cpu_steps = self.device.type == "cpu" and self.kv_dtype != FP8
        self.memory_plan = self._plan_memory()
        self.num_blocks = self.memory_plan.num_blocks
        if self.num_blocks < self.max_blocks_per_seq:
            raise KvantError(f"the KV cache holds {self.num_blocks * self.block_size} tokens, fewer than one "
                             f"{max_model_len}-token sequence: lower max_model_len or give the cache more memory")
        # [k|v, layer, block, offset, kv head, head dim]
        self.kv_cache = torch.zeros(2, mc.num_hidden_layers, self.num_blocks, self.block_size,
                                    mc.num_key_value_heads, mc.head_dim, dtype=self.kv_dtype, device=self.device)
        for i, attn in enumerate(model.attention_layers()):
            attn.k_cache, attn.v_cache = self.kv_cache[0, i], self.kv_cache[1, i]
            if self.kv_dtype == FP8:
                attn.k_scale = 1.0 if attn.k_scale is None else attn.k_scale
                attn.v_scale = 1.0 if attn.v_scale is None else attn.v_scale
            else:
                attn.k_scale = attn.v_scale = None
        self.sampler = Sampler(self.device, config.seed)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.graph_capture_s = 0.0
        if self.use_graphs:
            started = time.perf_counter()
            self.capture_cuda_graphs()
            self.graph_capture_s = time.perf_counter() - started

    def _plan_memory(self) -> MemoryPlan:
        """The KV pool's size and the memory around it, on every device: from the card's budget on CUDA, else
        from what fixed it (num_kv_blocks, kv_cache_memory on CPU, or the CPU default)."""
        cfg, mc = self.config, self.model.config
        kv_bytes = 1 if self.kv_dtype == FP8 else self.kv_dtype.itemsize
        block_bytes = kv_bytes_per_token(mc, kv_bytes) * self.block_size
        weights = sum(t.numel() * t.element_size() for t in {id(p): p for p in
                      list(self.model.parameters()) + list(self.model.buffers())}.values())
        sizes = dict(weights_bytes=weights, max_num_batched_tokens=cfg.max_num_batched_tokens,
                     max_num_seqs=cfg.max_num_seqs, block_size=self.block_size, kv_dtype_bytes=kv_bytes,
                     act_bytes=self.dtype.itemsize,
                     graph_batch_sizes=len(graph_batch_sizes(cfg.max_num_seqs)) if self.use_graphs else 0)
        if self.device.type == "cuda":
            # blocks freed during load (staging, repacking) go back to the card first: left cached by the allocator
            # they count as other processes' use (8B INT4 under --gpu-memory 24GiB was planned a 16.3 GiB budget
            # where 0.9 x 24 GiB less the CUDA context is 21.1)
            torch.cuda.empty_cache()
            free, total = torch.cuda.mem_get_info(self.device)
            if cfg.num_kv_blocks is None:
                ours = torch.cuda.memory_allocated(self.device)
                return plan_memory(mc, total_bytes=capped_total(total, cfg.gpu_memory),
                                   capped=cfg.gpu_memory is not None, used_by_others=max(0, total - free - ours),
                                   gpu_memory_utilization=cfg.gpu_memory_utilization,
                                   kv_cache_memory=cfg.kv_cache_memory, max_model_len=self.max_model_len, **sizes)
        else:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if cfg.num_kv_blocks is not None:
            num_blocks, sized_by = cfg.num_kv_blocks, "num_kv_blocks"
        else:
            one_seq = self.max_blocks_per_seq * block_bytes
            budget = cfg.kv_cache_memory or max(one_seq, min(CPU_KV_CACHE_BYTES, cfg.max_num_seqs * one_seq))
            num_blocks, sized_by = budget // block_bytes, "kv_cache_memory" if cfg.kv_cache_memory else "CPU default"
        return plan_fixed(mc, device=self.device.type, total_bytes=total, num_blocks=num_blocks, sized_by=sized_by,
                          **sizes)

    def release_sequence(self, seq_id: int) -> None:
        """Forget a finished or aborted sequence's per-sequence state (its seeded sampling generator)."""
        self.sampler.release(seq_id)

    # inputs
    def _tensor(self, data, dtype) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, pin_memory=self.device.type == "cuda").to(self.device,
                                                                                          non_blocking=True)

    def prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, Context]:
        input_ids, positions, slots, cu, context_lens = [], [], [], [0], []
        bs = self.block_size
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + n
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            cu.append(cu[-1] + n)
            context_lens.append(end)
        width = max(len(s.block_table) for s in batch.seqs)
        tables = [s.block_table + [-1] * (width - len(s.block_table)) for s in batch.seqs]
        cpu = None
        if self.cpu_steps:
            cpu = plan_cpu_step(self.model.model.rotary_emb.cos_sin, positions, slots, batch.num_new_tokens,
                                context_lens, [s.block_table for s in batch.seqs], bs)
        ctx = Context(cu_seqlens_q=self._tensor(cu, torch.int32), context_lens=self._tensor(context_lens, torch.int32),
                      slot_mapping=cpu.slot_mapping if cpu else self._tensor(slots, torch.int64),
                      block_tables=self._tensor(tables, torch.int32), is_decode=batch.is_decode,
                      max_seqlen_q=max(batch.num_new_tokens), cpu=cpu)
        return self._tensor(input_ids, torch.int64), self._tensor(positions, torch.int64), ctx

    # forward
    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: Context) -> torch.Tensor:
        set_context(ctx)
        try:
            return self.model(input_ids, positions)
        finally:
            set_context(None)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch) -> tuple[list[Sequence], SamplerOutput | None,
                                                  dict[int, tuple[int, list[dict[int, float]]]]]:
        """One step. Returns the seqs that sampled a token (their prompt is fully computed), the sampler's output
        for them, and per seq_id with prompt logprobs: (first prompt position covered, logprob dicts)."""
        if batch.is_decode and self.graphs and len(batch.seqs) <= max(self.graphs):
            # every sequence samples; none has prompt logprobs left (its prompt is computed)
            return list(batch.seqs), self._decode_graph(list(batch.seqs)), {}
        input_ids, positions, ctx = self.prepare(batch)
        hidden = self.forward(input_ids, positions, ctx)  # [T, H]
        sample_seqs, sample_rows, plp_spans = [], [], []
        offset = 0
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start = seq.num_computed_tokens
            if start + n == seq.num_tokens:
                sample_seqs.append(seq)
                sample_rows.append(offset + n - 1)
            if seq.params.prompt_logprobs is not None:
                # row j predicts token j + 1; rows before prompt_logprobs_from - 1 are not wanted
                first = max(start, seq.params.prompt_logprobs_from - 1)
                last = min(start + n, seq.num_prompt_tokens - 1)
                if first < last:
                    plp_spans.append((seq, offset + first - start, first, last))
            offset += n
        sampled = None
        if sample_seqs:
            a = sample_rows[0]
            rows = hidden[a:a + len(sample_rows)] if sample_rows[-1] - a == len(sample_rows) - 1 else hidden[sample_rows]
            logits = self.model.compute_logits(rows)
            sampled = self.sampler(logits, sample_seqs, self.model.config.eos_token_ids)
        return sample_seqs, sampled, self._prompt_logprobs(hidden, plp_spans)

    def _prompt_logprobs(self, hidden: torch.Tensor, spans: list) -> dict[int, tuple[int, list[dict[int, float]]]]:
        """The wanted rows of every sequence through the lm_head together, PROMPT_LOGPROB_ROWS at a time."""
        if not spans:
            return {}
        rows, targets, ks = [], [], []
        for seq, row, first, last in spans:
            rows.extend(range(row, row + last - first))
            targets.extend(seq.token_ids[first + 1:last + 1])
            ks.extend([seq.params.prompt_logprobs] * (last - first))
        dicts: list[dict[int, float]] = []
        for a in range(0, len(rows), PROMPT_LOGPROB_ROWS):
            b = min(a + PROMPT_LOGPROB_ROWS, len(rows))
            idx = torch.tensor(rows[a:b], device=hidden.device)
            lp = self.model.compute_logits(hidden[idx]).log_softmax(dim=-1)
            dicts.extend(top_logprobs(lp, torch.tensor(targets[a:b], device=lp.device), ks[a:b]))
        out, i = {}, 0
        for seq, _, first, last in spans:
            out[seq.seq_id] = (first + 1, dicts[i:i + last - first])
            i += last - first
        return out

    # CUDA graphs (decode only): static buffers, one shared memory pool, padded rows write nowhere
    @torch.inference_mode()
    def capture_cuda_graphs(self) -> None:
        sizes = graph_batch_sizes(self.config.max_num_seqs)
        max_bs = max(sizes)
        dev = self.device
        self.graph_vars = g = dict(
            input_ids=torch.zeros(max_bs, dtype=torch.int64, device=dev),
            positions=torch.zeros(max_bs, dtype=torch.int64, device=dev),
            slot_mapping=torch.full((max_bs,), -1, dtype=torch.int64, device=dev),
            context_lens=torch.ones(max_bs, dtype=torch.int32, device=dev),
            cu_seqlens_q=torch.arange(max_bs + 1, dtype=torch.int32, device=dev),
            block_tables=torch.zeros(max_bs, self.max_blocks_per_seq, dtype=torch.int32, device=dev),
            hidden=torch.zeros(max_bs, self.model.config.hidden_size, dtype=self.dtype, device=dev),
            temperature=torch.zeros(max_bs, dtype=torch.float32, device=dev),
            seeds=torch.zeros(max_bs, dtype=torch.int64, device=dev),
            tokens=torch.zeros(max_bs, dtype=torch.int64, device=dev),
            prev_rows=torch.full((max_bs,), -1, dtype=torch.int64, device=dev),
        )
        # two sets of pinned buffers, used in turn: a step's inputs are written while the step before it may still
        # be copying its own from the other set (async scheduling)
        self.decode_inputs = [DecodeInputs(max_bs, self.max_blocks_per_seq, self.block_size, pin=True)
                              for _ in range(2)]
        self.host_tokens = [torch.zeros(max_bs, dtype=torch.int64, pin_memory=True) for _ in range(2)]
        self._turn = 0
        pool = None
        for bs in reversed(sizes):
            ctx = Context(g["cu_seqlens_q"][:bs + 1], g["context_lens"][:bs], g["slot_mapping"][:bs],
                          g["block_tables"][:bs], True, 1)
            set_context(ctx)
            try:
                self._decode_step(bs)  # warmup
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool):
                    self._decode_step(bs)
            finally:
                set_context(None)
            pool = pool or graph.pool()
            self.graphs[bs] = graph
            torch.cuda.synchronize()

    def _decode_step(self, bs: int) -> None:
        # what a decode graph holds: the input ids still on the device (async scheduling), the model, the LM head
        # (bf16 logits, no fp32 copy) and one token per row; `tokens` holds the previous step's until sampling
        g = self.graph_vars
        input_ids = pending_input_ids(g["input_ids"][:bs], g["prev_rows"][:bs], g["tokens"])
        g["hidden"][:bs] = self.model(input_ids, g["positions"][:bs])
        sample_tokens(self.model.lm_head(g["hidden"][:bs]), g["temperature"][:bs], g["seeds"][:bs],
                      out=g["tokens"][:bs])

    def _decode_graph(self, seqs: list[Sequence]) -> SamplerOutput:
        """One decode step in its graph, LM head and sampling included; one device->host sync (the token ids).
        Rows that need more than temperature (penalties, top-k/p, min_p, logprobs, min_tokens) are sampled again
        outside the graph, from their hidden state, by the full sampler."""
        b = len(seqs)
        bs = next(s for s in sorted(self.graphs) if s >= b)
        full = [i for i, seq in enumerate(seqs) if not graph_samplable(seq)]
        skip = set(full)
        seeds = iter(self.sampler.row_seeds([seq for i, seq in enumerate(seqs) if i not in skip]))
        temps = [0.0 if i in skip else float(seq.params.temperature) for i, seq in enumerate(seqs)]
        row_seeds = [0 if i in skip else next(seeds) for i in range(b)]
        inputs = self._next_inputs()
        width = inputs.fill(seqs, bs, temps, row_seeds)
        inputs.copy_to(self.graph_vars, bs, width)
        self.graphs[bs].replay()
        token_ids = self.graph_vars["tokens"][:b].tolist()
        out = SamplerOutput(token_ids, [None] * b, [None] * b)
        if full:
            hidden = self.graph_vars["hidden"][full]
            rest = self.sampler(self.model.compute_logits(hidden), [seqs[i] for i in full],
                                self.model.config.eos_token_ids)
            for j, i in enumerate(full):
                out.token_ids[i], out.logprobs[i] = rest.token_ids[j], rest.logprobs[j]
                out.sampled_logprobs[i] = rest.sampled_logprobs[j]
        return out

    # async scheduling: a decode step is launched, and the host schedules the next one before reading its tokens
    def can_launch(self, seqs: list[Sequence]) -> bool:
        """True when these sequences can decode without the host reading tokens: every row samples inside the step
        (temperature only), and the batch fits a graph (or runs eagerly: CPU, enforce_eager)."""
        fits = not self.use_graphs or len(seqs) <= max(self.graphs, default=0)
        return fits and all(graph_samplable(seq) for seq in seqs)

    @torch.inference_mode()
    def launch_decode(self, seqs: list[Sequence], prev: DecodeLaunch | None) -> DecodeLaunch:
        """Start one decode step. A sequence whose last token is pending (sampled by `prev`, not read yet) takes its
        input id from prev's tokens on the device. The tokens come back with `collect`."""
        prev_rows = [prev.rows[s.seq_id] if s.has_pending_token else -1 for s in seqs]
        rows = {s.seq_id: i for i, s in enumerate(seqs)}
        temps = [float(s.params.temperature) for s in seqs]
        seeds = self.sampler.row_seeds(seqs)
        if not self.use_graphs:  # eager: the same step outside a graph; prev's tokens are already final
            input_ids, positions, ctx = self.prepare(ScheduledBatch(list(seqs), [1] * len(seqs)))
            if prev is not None:
                input_ids = pending_input_ids(input_ids, self._tensor(prev_rows, torch.int64),
                                              prev.tokens.to(input_ids.device))
            logits = self.model.compute_logits(self.forward(input_ids, positions, ctx))
            tokens = sample_tokens(logits, self._tensor(temps, torch.float32), self._tensor(seeds, torch.int64))
            return DecodeLaunch(list(seqs), rows, tokens.cpu(), None)
        b = len(seqs)
        bs = next(s for s in sorted(self.graphs) if s >= b)
        inputs = self._next_inputs()
        width = inputs.fill(seqs, bs, temps, seeds, prev_rows)
        inputs.copy_to(self.graph_vars, bs, width)
        self.graphs[bs].replay()
        host = self.host_tokens[self._turn][:b]
        host.copy_(self.graph_vars["tokens"][:b], non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return DecodeLaunch(list(seqs), rows, host, done)

    @staticmethod
    def collect(launch: DecodeLaunch) -> list[int]:
        """The launched step's sampled tokens, one per sequence (waits for the step)."""
        if launch.done is not None:
            launch.done.synchronize()
        return launch.tokens.tolist()

    def _next_inputs(self) -> DecodeInputs:
        # the set the step before last used: its copies ran before that step, which has been collected
        self._turn ^= 1
        return self.decode_inputs[self._turn]
