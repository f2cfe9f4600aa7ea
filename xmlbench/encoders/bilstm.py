"""A bidirectional LSTM document encoder (seed 004: LSTM/BiLSTM over word embeddings; DocBERT's student).

token ids -> embeddings (B, T, E) -> 1-2 layer BiLSTM (B, T, 2H) -> pooling over time (B, 2H).
Padding never enters: the sequences are packed by their lengths, so the backward direction starts at
each document's last real token, and every pooling ignores padded positions:

* ``max``: the element-wise maximum over real positions;
* ``mean``: the mean over real positions;
* ``attention``: a_t = softmax_t(u . tanh(W h_t + b)) over real positions, doc = sum_t a_t h_t
  (Yang et al. 2016's word attention).

``token_map`` (a buffer) maps tokenizer ids to embedding rows, so the table may hold only the tokens a
training split uses (the rest share the row of the unknown token).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

POOLINGS = ("max", "mean", "attention")


class BiLSTMEncoder(nn.Module):
    def __init__(self, n_tokens: int, rows: int, dim: int, hidden: int, layers: int, dropout: float,
                 pooling: str, pad_row: int = 0) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.register_buffer("token_map", torch.arange(n_tokens, dtype=torch.long).clamp(max=rows - 1))
        self.embedding = nn.Embedding(rows, dim, padding_idx=pad_row)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.out_dim = 2 * hidden
        if pooling == "attention":
            self.attention = nn.Linear(2 * hidden, 2 * hidden)
            self.context = nn.Parameter(torch.randn(2 * hidden) / (2 * hidden) ** 0.5)

    def set_table(self, token_map: torch.Tensor, table: torch.Tensor, pad_row: int) -> None:
        """A new embedding table (rows, E) and tokenizer id -> row map (before training, or when loading)."""
        self.token_map = token_map.to(torch.long)
        self.embedding = nn.Embedding(table.shape[0], table.shape[1], padding_idx=pad_row)
        with torch.no_grad():
            self.embedding.weight.copy_(table)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask != 0  # (B, T), right padding
        lengths = mask.sum(1).clamp(min=1)  # an empty row still reads its first position
        x = self.dropout(self.embedding(self.token_map[input_ids]))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        h, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=x.shape[1])  # (B, T, 2H)
        real = (torch.arange(x.shape[1], device=h.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
        if self.pooling == "max":
            return h.masked_fill(~real, float("-inf")).max(dim=1).values  # (B, 2H)
        if self.pooling == "mean":
            return (h * real).sum(1) / lengths.unsqueeze(1).to(h.dtype)  # (B, 2H)
        scores = torch.tanh(self.attention(h)) @ self.context  # (B, T)
        weights = torch.softmax(scores.masked_fill(~real.squeeze(2), float("-inf")), dim=1)  # (B, T)
        return (weights.unsqueeze(2) * h).sum(1)  # (B, 2H)
