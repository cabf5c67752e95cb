//! Encoding one pre-split piece: tiktoken's rank-based merge.
//!
//! Start from single bytes; repeatedly merge the adjacent pair whose concatenation has
//! the lowest rank (the leftmost one on ties) until no adjacent pair concatenates to a
//! token. [`merge_linear`] is tiktoken's `byte_pair_merge`, quadratic in the piece length
//! and fastest on short pieces; [`merge_heap`] gives the same parts with a heap and a
//! linked list in O(n log n), for long pieces.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

pub type Rank = u32;

/// Pieces at least this long (in bytes) are merged with the heap.
pub const HEAP_FROM_LEN: usize = 128;

/// The part boundaries of `piece` after merging: `[0, ..., piece.len()]`.
/// `rank_of` gives the rank of a byte string that is a token.
pub fn merge(piece: &[u8], rank_of: impl Fn(&[u8]) -> Option<Rank>) -> Vec<usize> {
    if piece.len() >= HEAP_FROM_LEN {
        merge_heap(piece, rank_of)
    } else {
        merge_linear(piece, rank_of)
    }
}

/// tiktoken's loop: `parts[k] = (start, rank of parts k and k+1 merged)`.
pub fn merge_linear(piece: &[u8], rank_of: impl Fn(&[u8]) -> Option<Rank>) -> Vec<usize> {
    let n = piece.len();
    if n < 2 {
        return (0..=n).collect();
    }
    let rank = |s: &[u8]| rank_of(s).unwrap_or(Rank::MAX);
    let mut parts: Vec<(usize, Rank)> = Vec::with_capacity(n + 1);
    for i in 0..n - 1 {
        parts.push((i, rank(&piece[i..i + 2])));
    }
    parts.push((n - 1, Rank::MAX));
    parts.push((n, Rank::MAX));
    // The rank of parts k and k+1 merged, which ends where part k+2 starts.
    let pair_rank = |parts: &[(usize, Rank)], k: usize| -> Rank {
        if k + 3 < parts.len() {
            rank(&piece[parts[k].0..parts[k + 3].0])
        } else {
            Rank::MAX
        }
    };
    loop {
        let (mut best, mut at) = (Rank::MAX, 0);
        for (k, &(_, r)) in parts[..parts.len() - 1].iter().enumerate() {
            if r < best {
                (best, at) = (r, k);
            }
        }
        if best == Rank::MAX {
            break;
        }
        if at > 0 {
            parts[at - 1].1 = pair_rank(&parts, at - 1);
        }
        parts[at].1 = pair_rank(&parts, at);
        parts.remove(at + 1);
    }
    parts.into_iter().map(|(start, _)| start).collect()
}

/// The same merges with a min-heap of (rank, start) over a linked list of parts; stale
/// heap entries (a part merged away, or its pair rank changed) are skipped when popped.
pub fn merge_heap(piece: &[u8], rank_of: impl Fn(&[u8]) -> Option<Rank>) -> Vec<usize> {
    let n = piece.len();
    if n < 2 {
        return (0..=n).collect();
    }
    let rank = |s: &[u8]| rank_of(s).unwrap_or(Rank::MAX);
    // Part k starts at byte k; next[k] / prev[k] link the live parts; n is the end.
    let mut next: Vec<usize> = (1..=n).collect();
    let mut prev: Vec<usize> = (0..n).map(|k| k.wrapping_sub(1)).collect();
    let mut alive = vec![true; n];
    let mut pair: Vec<Rank> = vec![Rank::MAX; n];
    let mut heap = BinaryHeap::with_capacity(n);
    for k in 0..n - 1 {
        pair[k] = rank(&piece[k..k + 2]);
        if pair[k] != Rank::MAX {
            heap.push(Reverse((pair[k], k)));
        }
    }
    // The rank of part k merged with the part after it.
    let pair_rank = |next: &[usize], k: usize| -> Rank {
        let after = next[k];
        if after >= n {
            return Rank::MAX;
        }
        rank(&piece[k..next[after]])
    };
    while let Some(Reverse((r, k))) = heap.pop() {
        if !alive[k] || pair[k] != r {
            continue;
        }
        let gone = next[k];
        alive[gone] = false;
        next[k] = next[gone];
        if next[k] < n {
            prev[next[k]] = k;
        }
        pair[k] = pair_rank(&next, k);
        if pair[k] != Rank::MAX {
            heap.push(Reverse((pair[k], k)));
        }
        let p = prev[k];
        if p < n {
            pair[p] = pair_rank(&next, p);
            if pair[p] != Rank::MAX {
                heap.push(Reverse((pair[p], p)));
            }
        }
    }
    let mut bounds = Vec::new();
    let mut k = 0;
    while k < n {
        bounds.push(k);
        k = next[k];
    }
    bounds.push(n);
    bounds
}
