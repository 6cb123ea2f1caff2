//! The per-channel mean of a tensor: the statistic bias correction needs
//! (Nagel et al., "Data-Free Quantization", 2019; NNCF's fast bias
//! correction). It gives no quantization range: a layer's input mean times its
//! weight rounding error is the shift in that layer's output mean, which the
//! converter moves into the bias.

use serde::{Deserialize, Serialize};

use super::qparams::QParams;
use super::{check_shape, ObserveError, Observer, ObserverState};

/// Sums per channel on `axis` (in f64: millions of f32 activations add up
/// without losing the mean's low bits), and the number of elements per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelMeanObserver {
    pub axis: usize,
    pub sum: Vec<f64>,
    pub count: u64,
}

impl ChannelMeanObserver {
    pub fn new(axis: usize) -> Self {
        ChannelMeanObserver {
            axis,
            sum: vec![],
            count: 0,
        }
    }

    /// The mean of each channel; `None` before any data. NaN elements make
    /// their channel's mean NaN, which the converter treats as unknown.
    pub fn mean(&self) -> Option<Vec<f64>> {
        (self.count > 0).then(|| self.sum.iter().map(|s| s / self.count as f64).collect())
    }
}

impl Observer for ChannelMeanObserver {
    fn observe(&mut self, x: &[f32], shape: &[usize]) -> Result<(), ObserveError> {
        check_shape(x, shape)?;
        let Some(&channels) = shape.get(self.axis) else {
            return Err(ObserveError::Shape(format!(
                "channel axis {} of a rank-{} tensor",
                self.axis,
                shape.len()
            )));
        };
        if self.sum.is_empty() {
            self.sum = vec![0.0; channels];
        } else if self.sum.len() != channels {
            return Err(ObserveError::Shape(format!(
                "{channels} channels, {} before",
                self.sum.len()
            )));
        }
        let inner: usize = shape[self.axis + 1..].iter().product();
        if x.is_empty() {
            return Ok(());
        }
        // x is [outer, channels, inner]: run i of `inner` elements is channel i % channels.
        for (i, run) in x.chunks_exact(inner).enumerate() {
            self.sum[i % channels] += run.iter().map(|&v| v as f64).sum::<f64>();
        }
        self.count += (x.len() / channels) as u64;
        Ok(())
    }

    fn range(&self) -> Option<(Vec<f32>, Vec<f32>)> {
        None
    }

    fn qparams(&self) -> Result<QParams, ObserveError> {
        Err(ObserveError::InvalidState(
            "a channel-mean observer gives no quantization range".into(),
        ))
    }

    fn state(&self) -> ObserverState {
        ObserverState::ChannelMean(self.clone())
    }

    fn merge(&mut self, other: &Self) -> Result<(), ObserveError> {
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            *self = other.clone();
            return Ok(());
        }
        if self.axis != other.axis || self.sum.len() != other.sum.len() {
            return Err(ObserveError::Merge(format!(
                "channel means on axis {} × {} and axis {} × {}",
                self.axis,
                self.sum.len(),
                other.axis,
                other.sum.len()
            )));
        }
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.count += other.count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn means_per_channel_on_any_axis_and_merge() {
        // [2, 3, 2]: channel c on axis 1 holds c·10 + {0, 1} in both batch rows.
        let x: Vec<f32> = (0..2)
            .flat_map(|_| (0..3).flat_map(|c| [c as f32 * 10.0, c as f32 * 10.0 + 1.0]))
            .collect();
        let mut o = ChannelMeanObserver::new(1);
        o.observe(&x, &[2, 3, 2]).unwrap();
        assert_eq!(o.mean().unwrap(), vec![0.5, 10.5, 20.5]);
        let mut last = ChannelMeanObserver::new(2);
        last.observe(&x, &[2, 3, 2]).unwrap();
        assert_eq!(last.mean().unwrap(), vec![10.0, 11.0]);
        let mut other = ChannelMeanObserver::new(1);
        other.observe(&[1.0; 3], &[1, 3, 1]).unwrap();
        o.merge(&other).unwrap();
        // 4 elements per channel before, 1 now.
        assert_eq!(o.mean().unwrap(), vec![0.6, 8.6, 16.6]);
        assert!(o.observe(&x, &[2, 2, 3]).is_err());
        assert!(o.qparams().is_err());
        assert!(ChannelMeanObserver::new(0).mean().is_none());
    }
}
