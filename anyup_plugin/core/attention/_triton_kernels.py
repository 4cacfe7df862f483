"""Triton kernels of the fused windowed attention; the algorithm is described (and the kernels
launched) in :mod:`anyup_plugin.core.attention.triton`.

Never import this module directly: :func:`~anyup_plugin.core.attention.triton.kernels`
executes it as a fresh module once per Triton mode, because ``@triton.jit`` decides when it
runs whether a kernel is compiled for the GPU or interpreted on the CPU
(``TRITON_INTERPRET=1``), and the same process may need both (the tests).

Layout conventions (every tensor contiguous, token = one pixel of one batch item):

- queries (B, H', W', D), keys (B, h, w, D), D = NH * HD: head ``n`` is channels
  ``[n HD, (n + 1) HD)`` of a token.
- values, outputs and their gradients (B, ., ., C).
- softmax statistics ``m``, ``l`` and ``delta``: (B, H', W', NH).
- window tables (int32): ``row_start``/``row_end`` (H',), ``col_start``/``col_end`` (W'):
  the keys ``[start, end)`` of every output row and column; ``key_row_first``/
  ``key_row_last`` (h,), ``key_col_first``/``key_col_last`` (w,): the output rows and
  columns whose windows may hold a feature row (column), as a range ``[first, last)``.

Block shapes are powers of two of at least 16 in every ``tl.dot`` dimension (the head
dimension padded with zeros to ``HDP``, the heads to ``NHP``); ragged edges are masked.
"""

# Compile-time constants (tl.constexpr) and sizes are capitals, as in Triton's own kernels.
# ruff: noqa: N803

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _load_heads(
    ptr,
    tokens,
    valid,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    TRANSPOSED: tl.constexpr,
):
    """The heads of ``tokens`` (N,) (int64 token indices) of a (tokens, NH * HD) tensor.

    Returns (NHP, N, HDP), or (NHP, HDP, N) if ``TRANSPOSED``; zero at padded heads and
    channels and at invalid tokens.
    """
    head = tl.arange(0, NHP)
    channel = tl.arange(0, HDP)
    if TRANSPOSED:
        offsets = (
            tokens[None, None, :] * (NH * HD) + head[:, None, None] * HD + channel[None, :, None]
        )
        mask = (head[:, None, None] < NH) & (channel[None, :, None] < HD) & valid[None, None, :]
    else:
        offsets = (
            tokens[None, :, None] * (NH * HD) + head[:, None, None] * HD + channel[None, None, :]
        )
        mask = (head[:, None, None] < NH) & (channel[None, None, :] < HD) & valid[None, :, None]
    return tl.load(ptr + offsets, mask=mask, other=0.0)


@triton.jit
def _load_per_head(ptr, tokens, valid, other, NH: tl.constexpr, NHP: tl.constexpr):
    """(NHP, N) per-head statistics of ``tokens`` from a (tokens, NH) tensor."""
    head = tl.arange(0, NHP)
    mask = (head[:, None] < NH) & valid[None, :]
    return tl.load(ptr + tokens[None, :] * NH + head[:, None], mask=mask, other=other)


@triton.jit
def _store_per_head(ptr, tokens, valid, x, NH: tl.constexpr, NHP: tl.constexpr):
    """Stores (NHP, N) per-head statistics of ``tokens`` into a (tokens, NH) tensor."""
    head = tl.arange(0, NHP)
    mask = (head[:, None] < NH) & valid[None, :]
    tl.store(ptr + tokens[None, :] * NH + head[:, None], x, mask=mask)


@triton.jit
def _head_logits(q3, k3t, pair_valid, PRECISION: tl.constexpr, ACC: tl.constexpr):
    """(NHP, BQ, HDP) x (NHP, HDP, BK) -> (NHP, BQ, BK) logits in ``ACC``, -inf off-window."""
    s3 = tl.dot(q3, k3t, input_precision=PRECISION).to(ACC)
    return tl.where(pair_valid[None, :, :], s3, float('-inf'))


@triton.jit
def _head_probabilities(s3, m3, inv3):
    """Softmax weights ``exp(s - m) * inv`` (NHP, BQ, BK); zero where ``s`` is -inf."""
    return tl.exp(s3 - m3[:, :, None]) * inv3[:, :, None]


@triton.jit
def _value_dot_products(
    do_ptr,
    v_ptr,
    q_tokens,
    q_valid,
    k_tokens,
    k_valid,
    C,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """(BQ, BK) ``dO[q] . V[k]`` over all C channels, in chunks of ``BC``, in ``ACC``."""
    channel = tl.arange(0, BC)
    acc = tl.zeros((BQ, BK), dtype=ACC)
    for c0 in range(0, C, BC):
        c = c0 + channel
        do = tl.load(
            do_ptr + q_tokens[:, None] * C + c[None, :],
            mask=q_valid[:, None] & (c[None, :] < C),
            other=0.0,
        )
        vt = tl.load(
            v_ptr + k_tokens[None, :] * C + c[:, None],
            mask=k_valid[None, :] & (c[:, None] < C),
            other=0.0,
        )
        acc += tl.dot(do.to(vt.dtype), vt, input_precision=PRECISION).to(ACC)
    return acc


@triton.jit
def _query_block(pid_row, pid_col, out_h, out_w, BQ: tl.constexpr):
    """Batch item, output row and the (BQ,) output columns of one block of queries."""
    b = pid_row // out_h
    i = pid_row % out_h
    j = pid_col * BQ + tl.arange(0, BQ)
    return b, i, j, j < out_w


@triton.jit
def _window_union(row_start, row_end, col_start, col_end, i, pid_col, out_w, BQ: tl.constexpr):
    """The rectangle of keys holding every window of a query block: rows [r0, r1) and
    columns [c0, c0 + n_cols) (the windows of one output row share their rows, and the
    column bounds are non-decreasing, so the union spans the first query's start to the last
    one's end)."""
    r0 = tl.load(row_start + i)
    r1 = tl.load(row_end + i)
    last = tl.minimum(pid_col * BQ + BQ, out_w) - 1
    c0 = tl.load(col_start + pid_col * BQ)
    c1 = tl.load(col_end + last)
    return r0, c0, tl.maximum(c1 - c0, 1), (r1 - r0) * (c1 - c0)


@triton.jit
def _key_block(b, r0, c0, n_cols, n_keys, t0, feat_h, feat_w, BK: tl.constexpr):
    """Keys ``t0 .. t0 + BK`` of the flattened union rectangle: (BK,) tokens, columns, valid."""
    t = t0 + tl.arange(0, BK)
    valid = t < n_keys
    col = c0 + t % n_cols
    row = r0 + t // n_cols
    tokens = (b.to(tl.int64) * feat_h + row) * feat_w + col
    return tokens, col, valid


@triton.jit
def forward_stats_kernel(
    q_ptr,
    k_ptr,
    m_ptr,
    l_ptr,
    row_start,
    row_end,
    col_start,
    col_end,
    out_h,
    out_w,
    feat_h,
    feat_w,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """Pass 1: every head's maximum logit ``m`` and sum ``l = sum exp(s - m)`` over the window.

    Grid (B * H', cdiv(W', BQ)). An online maximum: ``l`` is rescaled when ``m`` grows.
    """
    b, i, j, q_valid = _query_block(tl.program_id(0), tl.program_id(1), out_h, out_w, BQ)
    r0, c0, n_cols, n_keys = _window_union(
        row_start, row_end, col_start, col_end, i, tl.program_id(1), out_w, BQ
    )
    q_tokens = (b.to(tl.int64) * out_h + i) * out_w + j
    q_cs = tl.load(col_start + j, mask=q_valid, other=0)
    q_ce = tl.load(col_end + j, mask=q_valid, other=0)
    q3 = _load_heads(q_ptr, q_tokens, q_valid, NH, HD, NHP, HDP, False)
    m3 = tl.full((NHP, BQ), float('-inf'), dtype=ACC)
    l3 = tl.zeros((NHP, BQ), dtype=ACC)
    for t0 in range(0, n_keys, BK):
        k_tokens, col, k_valid = _key_block(b, r0, c0, n_cols, n_keys, t0, feat_h, feat_w, BK)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (col[None, :] >= q_cs[:, None])
            & (col[None, :] < q_ce[:, None])
        )
        k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
        s3 = _head_logits(q3, k3t, pair_valid, PRECISION, ACC)
        m_new = tl.maximum(m3, tl.max(s3, axis=2))
        # A query with no key yet keeps -inf: shift by 0 instead (every exp is 0 anyway).
        m_use = tl.where(m_new == float('-inf'), 0.0, m_new)
        l3 = l3 * tl.exp(m3 - m_use) + tl.sum(tl.exp(s3 - m_use[:, :, None]), axis=2)
        m3 = m_new
    _store_per_head(m_ptr, q_tokens, q_valid, m3, NH, NHP)
    _store_per_head(l_ptr, q_tokens, q_valid, l3, NH, NHP)


@triton.jit
def forward_values_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    m_ptr,
    l_ptr,
    out_ptr,
    row_start,
    row_end,
    col_start,
    col_end,
    out_h,
    out_w,
    feat_h,
    feat_w,
    C,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """Pass 2: ``out = sum_k (mean_n p_n(q, k)) v_k`` for ``BC`` channels of a query block.

    Grid (B * H', cdiv(W', BQ), cdiv(C, BC)). The heads' probabilities are recomputed from
    the statistics of pass 1, averaged into one (BQ, BK) map and multiplied by the values.
    """
    b, i, j, q_valid = _query_block(tl.program_id(0), tl.program_id(1), out_h, out_w, BQ)
    r0, c0, n_cols, n_keys = _window_union(
        row_start, row_end, col_start, col_end, i, tl.program_id(1), out_w, BQ
    )
    q_tokens = (b.to(tl.int64) * out_h + i) * out_w + j
    q_cs = tl.load(col_start + j, mask=q_valid, other=0)
    q_ce = tl.load(col_end + j, mask=q_valid, other=0)
    q3 = _load_heads(q_ptr, q_tokens, q_valid, NH, HD, NHP, HDP, False)
    m3 = _load_per_head(m_ptr, q_tokens, q_valid, 0.0, NH, NHP)
    # The mean over heads folded into each head's normaliser; padded heads weigh nothing.
    inv3 = 1.0 / (_load_per_head(l_ptr, q_tokens, q_valid, 1.0, NH, NHP) * NH)
    inv3 = tl.where(tl.arange(0, NHP)[:, None] < NH, inv3, 0.0)
    channel = tl.program_id(2) * BC + tl.arange(0, BC)
    acc = tl.zeros((BQ, BC), dtype=ACC)
    for t0 in range(0, n_keys, BK):
        k_tokens, col, k_valid = _key_block(b, r0, c0, n_cols, n_keys, t0, feat_h, feat_w, BK)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (col[None, :] >= q_cs[:, None])
            & (col[None, :] < q_ce[:, None])
        )
        k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
        s3 = _head_logits(q3, k3t, pair_valid, PRECISION, ACC)
        attn = tl.sum(_head_probabilities(s3, m3, inv3), axis=0)
        v = tl.load(
            v_ptr + k_tokens[:, None] * C + channel[None, :],
            mask=k_valid[:, None] & (channel[None, :] < C),
            other=0.0,
        )
        acc += tl.dot(attn.to(v.dtype), v, input_precision=PRECISION).to(ACC)
    tl.store(
        out_ptr + q_tokens[:, None] * C + channel[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=q_valid[:, None] & (channel[None, :] < C),
    )


@triton.jit
def backward_query_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    m_ptr,
    l_ptr,
    delta_ptr,
    dq_ptr,
    row_start,
    row_end,
    col_start,
    col_end,
    out_h,
    out_w,
    feat_h,
    feat_w,
    C,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """Query gradients and ``delta_n(q) = sum_k p_n(q, k) dP(q, k)``, ``dP = dO . V``.

    Grid (B * H', cdiv(W', BQ)). Two passes over the window: the first sums ``delta``, the
    second ``dQ_n = sum_k p_n (dP - delta_n) K_n / NH`` (the softmax's backward per head,
    each head's map weighing ``1 / NH`` in the mean).
    """
    b, i, j, q_valid = _query_block(tl.program_id(0), tl.program_id(1), out_h, out_w, BQ)
    r0, c0, n_cols, n_keys = _window_union(
        row_start, row_end, col_start, col_end, i, tl.program_id(1), out_w, BQ
    )
    q_tokens = (b.to(tl.int64) * out_h + i) * out_w + j
    q_cs = tl.load(col_start + j, mask=q_valid, other=0)
    q_ce = tl.load(col_end + j, mask=q_valid, other=0)
    q3 = _load_heads(q_ptr, q_tokens, q_valid, NH, HD, NHP, HDP, False)
    m3 = _load_per_head(m_ptr, q_tokens, q_valid, 0.0, NH, NHP)
    inv3 = 1.0 / _load_per_head(l_ptr, q_tokens, q_valid, 1.0, NH, NHP)
    inv3 = tl.where(tl.arange(0, NHP)[:, None] < NH, inv3, 0.0)
    delta3 = tl.zeros((NHP, BQ), dtype=ACC)
    for t0 in range(0, n_keys, BK):
        k_tokens, col, k_valid = _key_block(b, r0, c0, n_cols, n_keys, t0, feat_h, feat_w, BK)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (col[None, :] >= q_cs[:, None])
            & (col[None, :] < q_ce[:, None])
        )
        k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
        p3 = _head_probabilities(_head_logits(q3, k3t, pair_valid, PRECISION, ACC), m3, inv3)
        dp = _value_dot_products(
            do_ptr, v_ptr, q_tokens, q_valid, k_tokens, k_valid, C, BQ, BK, BC, PRECISION, ACC
        )
        delta3 += tl.sum(p3 * dp[None, :, :], axis=2)
    _store_per_head(delta_ptr, q_tokens, q_valid, delta3, NH, NHP)
    dq3 = tl.zeros((NHP, BQ, HDP), dtype=ACC)
    for t0 in range(0, n_keys, BK):
        k_tokens, col, k_valid = _key_block(b, r0, c0, n_cols, n_keys, t0, feat_h, feat_w, BK)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (col[None, :] >= q_cs[:, None])
            & (col[None, :] < q_ce[:, None])
        )
        k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
        p3 = _head_probabilities(_head_logits(q3, k3t, pair_valid, PRECISION, ACC), m3, inv3)
        dp = _value_dot_products(
            do_ptr, v_ptr, q_tokens, q_valid, k_tokens, k_valid, C, BQ, BK, BC, PRECISION, ACC
        )
        ds3 = p3 * (dp[None, :, :] - delta3[:, :, None])
        k3 = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, False)
        dq3 += tl.dot(ds3.to(k3.dtype), k3, input_precision=PRECISION).to(ACC)
    head = tl.arange(0, NHP)
    ch = tl.arange(0, HDP)
    tl.store(
        dq_ptr + q_tokens[None, :, None] * (NH * HD) + head[:, None, None] * HD + ch[None, None, :],
        (dq3 / NH).to(dq_ptr.dtype.element_ty),
        mask=(head[:, None, None] < NH) & (ch[None, None, :] < HD) & q_valid[None, :, None],
    )


@triton.jit
def _queries_of_keys(
    key_row_first,
    key_row_last,
    key_col_first,
    key_col_last,
    pid_row,
    pid_col,
    feat_h,
    feat_w,
    BK: tl.constexpr,
):
    """A block of keys (BK consecutive columns of one feature row) and the rectangle of
    output pixels whose windows may hold them: rows [i0, i0 + n_rows), columns
    [j0, j0 + n_cols); ``n_queries`` is 0 when no window holds any of the keys."""
    b = pid_row // feat_h
    r = pid_row % feat_h
    col = pid_col * BK + tl.arange(0, BK)
    k_valid = col < feat_w
    i0 = tl.load(key_row_first + r)
    i1 = tl.load(key_row_last + r)
    j0 = tl.load(key_col_first + pid_col * BK)
    j1 = tl.load(key_col_last + tl.minimum(pid_col * BK + BK, feat_w) - 1)
    n_queries = tl.maximum(i1 - i0, 0) * tl.maximum(j1 - j0, 0)
    k_tokens = (b.to(tl.int64) * feat_h + r) * feat_w + col
    return b, k_tokens, col, k_valid, i0, j0, tl.maximum(j1 - j0, 1), n_queries


@triton.jit
def _query_rectangle_block(b, i0, j0, n_cols, n_queries, t0, out_h, out_w, BQ: tl.constexpr):
    """Queries ``t0 .. t0 + BQ`` of the flattened output rectangle: (BQ,) tokens, columns,
    valid."""
    t = t0 + tl.arange(0, BQ)
    valid = t < n_queries
    col = j0 + t % n_cols
    row = i0 + t // n_cols
    return (b.to(tl.int64) * out_h + row) * out_w + col, col, valid


@triton.jit
def backward_key_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    m_ptr,
    l_ptr,
    delta_ptr,
    dk_ptr,
    col_start,
    col_end,
    key_row_first,
    key_row_last,
    key_col_first,
    key_col_last,
    out_h,
    out_w,
    feat_h,
    feat_w,
    C,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """Key gradients ``dK_n = sum_q p_n (dP - delta_n) Q_n / NH``, key-centric.

    Grid (B * h, cdiv(w, BK)). Each program owns its keys and sums over the queries whose
    windows hold them, so there are no atomics and the sum's order is fixed.
    """
    b, k_tokens, kcol, k_valid, i0, j0, n_cols, n_queries = _queries_of_keys(
        key_row_first,
        key_row_last,
        key_col_first,
        key_col_last,
        tl.program_id(0),
        tl.program_id(1),
        feat_h,
        feat_w,
        BK,
    )
    k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
    head_real = tl.arange(0, NHP)[:, None] < NH
    dk3 = tl.zeros((NHP, BK, HDP), dtype=ACC)
    for t0 in range(0, n_queries, BQ):
        q_tokens, qcol, q_valid = _query_rectangle_block(
            b, i0, j0, n_cols, n_queries, t0, out_h, out_w, BQ
        )
        q_cs = tl.load(col_start + qcol, mask=q_valid, other=0)
        q_ce = tl.load(col_end + qcol, mask=q_valid, other=0)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (kcol[None, :] >= q_cs[:, None])
            & (kcol[None, :] < q_ce[:, None])
        )
        q3 = _load_heads(q_ptr, q_tokens, q_valid, NH, HD, NHP, HDP, False)
        m3 = _load_per_head(m_ptr, q_tokens, q_valid, 0.0, NH, NHP)
        inv3 = tl.where(
            head_real, 1.0 / _load_per_head(l_ptr, q_tokens, q_valid, 1.0, NH, NHP), 0.0
        )
        delta3 = _load_per_head(delta_ptr, q_tokens, q_valid, 0.0, NH, NHP)
        p3 = _head_probabilities(_head_logits(q3, k3t, pair_valid, PRECISION, ACC), m3, inv3)
        dp = _value_dot_products(
            do_ptr, v_ptr, q_tokens, q_valid, k_tokens, k_valid, C, BQ, BK, BC, PRECISION, ACC
        )
        ds3 = p3 * (dp[None, :, :] - delta3[:, :, None])
        dk3 += tl.dot(tl.permute(ds3, (0, 2, 1)).to(q3.dtype), q3, input_precision=PRECISION).to(
            ACC
        )
    head = tl.arange(0, NHP)
    ch = tl.arange(0, HDP)
    tl.store(
        dk_ptr + k_tokens[None, :, None] * (NH * HD) + head[:, None, None] * HD + ch[None, None, :],
        (dk3 / NH).to(dk_ptr.dtype.element_ty),
        mask=(head[:, None, None] < NH) & (ch[None, None, :] < HD) & k_valid[None, :, None],
    )


@triton.jit
def backward_value_kernel(
    q_ptr,
    k_ptr,
    do_ptr,
    m_ptr,
    l_ptr,
    dv_ptr,
    col_start,
    col_end,
    key_row_first,
    key_row_last,
    key_col_first,
    key_col_last,
    out_h,
    out_w,
    feat_h,
    feat_w,
    C,
    NH: tl.constexpr,
    HD: tl.constexpr,
    NHP: tl.constexpr,
    HDP: tl.constexpr,
    BQ: tl.constexpr,
    BK: tl.constexpr,
    BC: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC: tl.constexpr,
):
    """Value gradients ``dV_k = sum_q (mean_n p_n(q, k)) dO_q`` for ``BC`` channels, key-centric.

    Grid (B * h, cdiv(w, BK), cdiv(C, BC)).
    """
    b, k_tokens, kcol, k_valid, i0, j0, n_cols, n_queries = _queries_of_keys(
        key_row_first,
        key_row_last,
        key_col_first,
        key_col_last,
        tl.program_id(0),
        tl.program_id(1),
        feat_h,
        feat_w,
        BK,
    )
    k3t = _load_heads(k_ptr, k_tokens, k_valid, NH, HD, NHP, HDP, True)
    head_real = tl.arange(0, NHP)[:, None] < NH
    channel = tl.program_id(2) * BC + tl.arange(0, BC)
    dv = tl.zeros((BK, BC), dtype=ACC)
    for t0 in range(0, n_queries, BQ):
        q_tokens, qcol, q_valid = _query_rectangle_block(
            b, i0, j0, n_cols, n_queries, t0, out_h, out_w, BQ
        )
        q_cs = tl.load(col_start + qcol, mask=q_valid, other=0)
        q_ce = tl.load(col_end + qcol, mask=q_valid, other=0)
        pair_valid = (
            q_valid[:, None]
            & k_valid[None, :]
            & (kcol[None, :] >= q_cs[:, None])
            & (kcol[None, :] < q_ce[:, None])
        )
        q3 = _load_heads(q_ptr, q_tokens, q_valid, NH, HD, NHP, HDP, False)
        m3 = _load_per_head(m_ptr, q_tokens, q_valid, 0.0, NH, NHP)
        inv3 = _load_per_head(l_ptr, q_tokens, q_valid, 1.0, NH, NHP) * NH
        inv3 = tl.where(head_real, 1.0 / inv3, 0.0)
        attn = tl.sum(
            _head_probabilities(_head_logits(q3, k3t, pair_valid, PRECISION, ACC), m3, inv3),
            axis=0,
        )
        do = tl.load(
            do_ptr + q_tokens[:, None] * C + channel[None, :],
            mask=q_valid[:, None] & (channel[None, :] < C),
            other=0.0,
        )
        dv += tl.dot(tl.trans(attn).to(do.dtype), do, input_precision=PRECISION).to(ACC)
    tl.store(
        dv_ptr + k_tokens[:, None] * C + channel[None, :],
        dv.to(dv_ptr.dtype.element_ty),
        mask=k_valid[:, None] & (channel[None, :] < C),
    )
