"""The CUDA-graph decode inputs built in persistent host buffers, against values worked out by hand."""
import torch

from kvant.engine.decode_inputs import DecodeInputs
from kvant.engine.sampling_params import SamplingParams
from kvant.engine.sequence import PENDING_TOKEN, Sequence


def _seq(seq_id, tokens, table):
    s = Sequence(seq_id, f"r{seq_id}", 0, tokens, SamplingParams(), block_size=4)
    s.block_table = table
    s.num_computed_tokens = len(tokens) - 1
    return s


def _graph_vars(max_bs, max_blocks):
    return dict(input_ids=torch.full((max_bs,), 99, dtype=torch.int64),
                positions=torch.full((max_bs,), 99, dtype=torch.int64),
                slot_mapping=torch.full((max_bs,), 99, dtype=torch.int64),
                context_lens=torch.full((max_bs,), 99, dtype=torch.int32),
                temperature=torch.full((max_bs,), 99.0), seeds=torch.full((max_bs,), 99, dtype=torch.int64),
                prev_rows=torch.full((max_bs,), 99, dtype=torch.int64),
                block_tables=torch.full((max_bs, max_blocks), 99, dtype=torch.int32))


def test_fill_and_copy_pad_rows_and_reuse_buffers():
    inputs = DecodeInputs(max_bs=8, max_blocks_per_seq=5, block_size=4, pin=False)
    g = _graph_vars(8, 5)
    # 6 tokens: the last (id 16) sits at position 5 = block 1 (id 7), offset 1 -> slot 29; 3 tokens: position 2 in
    # block 0 (id 3) -> slot 14
    seqs = [_seq(0, [11, 12, 13, 14, 15, 16], [2, 7]), _seq(1, [21, 22, 23], [3])]
    width = inputs.fill(seqs, bs=4, temperature=[0.0, 0.7], seeds=[0, -5])
    inputs.copy_to(g, 4, width)
    assert width == 2
    assert g["input_ids"][:4].tolist() == [16, 23, 0, 0]
    assert g["positions"][:4].tolist() == [5, 2, 0, 0]
    assert g["slot_mapping"][:4].tolist() == [29, 14, -1, -1]  # padded rows store nothing
    assert g["context_lens"][:4].tolist() == [6, 3, 1, 1]
    assert g["block_tables"][0, :2].tolist() == [2, 7] and g["block_tables"][1, 0] == 3
    assert g["block_tables"][2:4, 0].tolist() == [0, 0]  # padded rows read block 0
    assert g["temperature"][:4].tolist() == [0.0, 0.699999988079071, 0.0, 0.0]  # padded rows are greedy
    assert g["seeds"][:2].tolist() == [0, -5]
    assert g["input_ids"][4:].tolist() == [99] * 4  # rows past the bucket are left alone
    # next step, one sequence with a wider table: the packed host table changes shape and the values follow
    seqs = [_seq(2, list(range(1, 11)), [4, 1, 9])]  # position 9: block 2 (id 9), offset 1 -> slot 37
    width = inputs.fill(seqs, bs=1, temperature=[1.0], seeds=[3])
    inputs.copy_to(g, 1, width)
    assert width == 3
    assert (g["input_ids"][0].item(), g["positions"][0].item(), g["slot_mapping"][0].item(),
            g["context_lens"][0].item()) == (10, 9, 37, 10)
    assert g["block_tables"][0, :3].tolist() == [4, 1, 9]
    assert g["prev_rows"][:1].tolist() == [-1]  # no previous step named: every id is on the host


def test_pending_last_token_is_read_from_the_previous_step():
    # async scheduling: seq 0's last token is still on the device, in row 5 of the previous step's tokens
    inputs = DecodeInputs(max_bs=8, max_blocks_per_seq=5, block_size=4, pin=False)
    g = _graph_vars(8, 5)
    seqs = [_seq(0, [11, 12, 13, 14, PENDING_TOKEN], [2, 7]), _seq(1, [21, 22, 23], [3])]
    width = inputs.fill(seqs, bs=4, temperature=[0.0, 0.0], seeds=[0, 0], prev_rows=[5, -1])
    inputs.copy_to(g, 4, width)
    assert g["prev_rows"][:4].tolist() == [5, -1, -1, -1]  # padded rows read nothing
    assert g["input_ids"][:2].tolist() == [0, 23]  # the placeholder never reaches the embedding
    assert g["positions"][:2].tolist() == [4, 2] and g["slot_mapping"][:2].tolist() == [28, 14]
