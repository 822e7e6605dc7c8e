//! Channel bands: a convolution whose output channels each read only some input channels
//! (CiC's channel windows) split into blocks of consecutive output channels, each block with
//! the one range of input channels its members read between them. The CPU kernels then run one
//! GEMM per block over that range instead of one over every input channel, so a window layer
//! costs about what its own multiply-accumulates say rather than a dense layer's.

use std::ops::Range;

/// One block: output channels `out` and input channels `inp`, of which the weight is zero
/// outside (its other entries are zero).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBand {
    /// Consecutive output channels.
    pub out: Range<usize>,
    /// Consecutive input channels.
    pub inp: Range<usize>,
}

/// Where a convolution's weight can be non-zero, as blocks the CPU kernels run one GEMM each:
/// output blocks (their `out` ranges tile `0..c_out`, each with the input channels its members
/// read) for the forward and the weight gradient, and input blocks (their `inp` ranges tile
/// `0..c_in`, each with the output channels that read them) for the input gradient, which then
/// writes every input row once. Made only by [`ChannelBands::dense`] and
/// [`ChannelBands::from_windows`], so the kernels can trust the ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelBands {
    c_in: usize,
    c_out: usize,
    by_output: Vec<ChannelBand>,
    by_input: Vec<ChannelBand>,
}

impl ChannelBands {
    /// One block: every output channel reads every input channel (a dense convolution).
    pub fn dense(c_in: usize, c_out: usize) -> Self {
        let all = vec![ChannelBand {
            out: 0..c_out,
            inp: 0..c_in,
        }];
        Self {
            c_in,
            c_out,
            by_output: all.clone(),
            by_input: all,
        }
    }

    /// The blocks of a channel-window layer: output channel `j` reads input channels
    /// `[starts[j], starts[j] + window)`, the starts non-decreasing (as CiC's are). Consecutive
    /// output channels are grouped `height` at a time, each group with the union of its windows;
    /// consecutive input channels `height` at a time, each group with the output channels whose
    /// windows meet it.
    ///
    /// Taller blocks make longer GEMMs but take in more channels outside each member's window;
    /// see [`WINDOW_BAND_HEIGHT`]. Errors when a window leaves `0..c_in` or the starts decrease.
    pub fn from_windows(
        c_in: usize,
        starts: &[usize],
        window: usize,
        height: usize,
    ) -> candle_core::Result<Self> {
        let height = height.max(1);
        if window == 0 || starts.iter().any(|&s| s + window > c_in) {
            candle_core::bail!(
                "channel bands: windows of {window} channels starting at {starts:?} must be \
                 non-empty and lie within the {c_in} input channels"
            );
        }
        if starts.windows(2).any(|p| p[1] < p[0]) {
            candle_core::bail!("channel bands: window starts must not decrease, got {starts:?}");
        }
        let by_output = (0..starts.len())
            .step_by(height)
            .map(|lo| {
                let hi = (lo + height).min(starts.len());
                ChannelBand {
                    out: lo..hi,
                    inp: starts[lo]..starts[hi - 1] + window,
                }
            })
            .collect();
        // Output channel j meets input channels [i0, i1) when s_j < i1 and s_j + w > i0; with
        // non-decreasing starts those j are one range, empty for channels no window reads.
        let by_input = (0..c_in)
            .step_by(height)
            .map(|i0| {
                let i1 = (i0 + height).min(c_in);
                let first = starts.partition_point(|&s| s + window <= i0);
                let end = starts.partition_point(|&s| s < i1).max(first);
                ChannelBand {
                    out: first..end,
                    inp: i0..i1,
                }
            })
            .collect();
        Ok(Self {
            c_in,
            c_out: starts.len(),
            by_output,
            by_input,
        })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.c_in
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.c_out
    }

    /// The output blocks, in output-channel order (forward and weight gradient).
    pub fn by_output(&self) -> &[ChannelBand] {
        &self.by_output
    }

    /// The input blocks, in input-channel order (input gradient); an input channel no output
    /// reads has an empty `out`.
    pub fn by_input(&self) -> &[ChannelBand] {
        &self.by_input
    }

    /// Output channel × input channel pairs the forward multiplies: `Σ |out|·|inp|` over the
    /// output blocks (times k² and the output pixels for multiply-accumulates); `c_in·c_out` for
    /// a dense layer.
    pub fn channel_pairs(&self) -> usize {
        self.by_output
            .iter()
            .map(|b| b.out.len() * b.inp.len())
            .sum()
    }

    /// Whether this is one block of every channel.
    pub(super) fn is_dense(&self) -> bool {
        matches!(&self.by_output[..], [b] if b.inp == (0..self.c_in))
    }
}

/// Channels per block for CiC's window layers, measured with the `window_conv` group of
/// `benches/benches/layers.rs` (`docs/performance.md`): shorter blocks take in fewer channels
/// outside the windows, taller ones keep the GEMMs long enough to run near the machine's peak.
pub const WINDOW_BAND_HEIGHT: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(blocks: &[ChannelBand]) -> Vec<(Range<usize>, Range<usize>)> {
        blocks
            .iter()
            .map(|b| (b.out.clone(), b.inp.clone()))
            .collect()
    }

    #[test]
    fn window_blocks_read_the_union_of_their_windows() {
        // 8 output channels over 11 inputs, window 4, starts 0 1 2 3 3 4 5 6; input 10 is unread.
        let starts = [0, 1, 2, 3, 3, 4, 5, 6];
        let bands = ChannelBands::from_windows(11, &starts, 4, 3).unwrap();
        assert_eq!(
            ranges(bands.by_output()),
            [(0..3, 0..6), (3..6, 3..8), (6..8, 5..10)]
        );
        // Inputs 0..3 are read by the windows starting at 0, 1, 2 (outputs 0..3), inputs 3..6 by
        // those starting at 0..=5 (outputs 0..7), 6..9 by starts 3..=6, and 9..11 by start 6.
        assert_eq!(
            ranges(bands.by_input()),
            [(0..3, 0..3), (0..7, 3..6), (3..8, 6..9), (7..8, 9..11)]
        );
        assert_eq!(bands.channel_pairs(), 3 * 6 + 3 * 5 + 2 * 5);
        assert!(!bands.is_dense());
        assert!(ChannelBands::dense(10, 8).is_dense());
        assert_eq!(ChannelBands::dense(10, 8).channel_pairs(), 80);
        let unread = ChannelBands::from_windows(12, &[0, 1], 2, 4).unwrap();
        assert_eq!(ranges(unread.by_input())[2], (2..2, 8..12));
    }

    #[test]
    fn windows_outside_the_inputs_or_out_of_order_are_refused() {
        let outside = ChannelBands::from_windows(4, &[0, 2], 3, 2).unwrap_err();
        assert!(
            outside
                .to_string()
                .contains("lie within the 4 input channels"),
            "{outside}"
        );
        let order = ChannelBands::from_windows(8, &[2, 1], 3, 2).unwrap_err();
        assert!(order.to_string().contains("must not decrease"), "{order}");
    }
}
