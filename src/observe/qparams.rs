//! Quantization specs and the min/max → (scale, zero point) formula.
//!
//! This is a line-by-line port of PyTorch's
//! `UniformQuantizationObserverBase._calculate_qparams` and
//! `torch.ao.quantization.utils.calculate_qmin_qmax` (torch 2.15). PyTorch does
//! the arithmetic on float32 tensors, so every step here is done in `f32` in the
//! same order, Python-float constants are rounded to `f32` exactly where torch
//! casts them, and rounding is half-to-even like `torch.round`. With that, the
//! scales are bit-identical to torch's for the same min/max.

use serde::{Deserialize, Serialize};

use super::ObserveError;

/// Quantized integer type. The `Q*` and plain variants behave the same except
/// where torch distinguishes them (the symmetric zero point of `UInt16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QDtype {
    /// `torch.quint8`: 0..=255.
    #[serde(rename = "quint8")]
    QUInt8,
    /// `torch.qint8`: -128..=127.
    #[serde(rename = "qint8")]
    QInt8,
    /// `torch.uint8` (same ranges as `QUInt8`).
    #[serde(rename = "uint8")]
    UInt8,
    /// `torch.int8` (same ranges as `QInt8`).
    #[serde(rename = "int8")]
    Int8,
    /// `torch.uint16`: 0..=65535, symmetric zero point 32768.
    #[serde(rename = "uint16")]
    UInt16,
    /// `torch.int16`: -32768..=32767.
    #[serde(rename = "int16")]
    Int16,
    /// `torch.qint32` / `torch.int32`.
    #[serde(rename = "int32")]
    Int32,
}

impl QDtype {
    /// Bit width (`torch.iinfo(dtype).bits`), used by the histogram search.
    pub fn bits(self) -> u32 {
        match self {
            QDtype::QUInt8 | QDtype::QInt8 | QDtype::UInt8 | QDtype::Int8 => 8,
            QDtype::UInt16 | QDtype::Int16 => 16,
            QDtype::Int32 => 32,
        }
    }

    /// Whether the type is unsigned.
    pub fn is_unsigned(self) -> bool {
        matches!(self, QDtype::QUInt8 | QDtype::UInt8 | QDtype::UInt16)
    }

    fn is_8bit_unsigned(self) -> bool {
        matches!(self, QDtype::QUInt8 | QDtype::UInt8)
    }

    fn is_8bit_signed(self) -> bool {
        matches!(self, QDtype::QInt8 | QDtype::Int8)
    }
}

/// Quantization scheme (torch `qscheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QScheme {
    PerTensorAffine,
    PerTensorSymmetric,
    PerChannelAffine,
    PerChannelSymmetric,
}

impl QScheme {
    pub fn is_symmetric(self) -> bool {
        matches!(
            self,
            QScheme::PerTensorSymmetric | QScheme::PerChannelSymmetric
        )
    }
    pub fn is_per_channel(self) -> bool {
        matches!(
            self,
            QScheme::PerChannelAffine | QScheme::PerChannelSymmetric
        )
    }
}

/// `torch.finfo(torch.float32).eps`, torch's default lower bound for scales.
pub const DEFAULT_EPS: f32 = f32::EPSILON;

/// What an observer quantizes to: the constructor arguments shared by all of
/// torch's uniform observers (`dtype`, `qscheme`, `reduce_range`,
/// `quant_min`/`quant_max`, `eps`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuantSpec {
    pub dtype: QDtype,
    pub qscheme: QScheme,
    /// Drop one bit of range (torch: deprecated, kept for fbgemm/x86 activations).
    pub reduce_range: bool,
    /// Custom range; only used when both ends are given (torch's `has_customized_qrange`).
    pub quant_min: Option<i64>,
    pub quant_max: Option<i64>,
    pub eps: f32,
}

impl Default for QuantSpec {
    /// torch's default: quint8, per-tensor affine, full range, eps = f32::EPSILON.
    fn default() -> Self {
        QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine)
    }
}

impl QuantSpec {
    pub fn new(dtype: QDtype, qscheme: QScheme) -> Self {
        QuantSpec {
            dtype,
            qscheme,
            reduce_range: false,
            quant_min: None,
            quant_max: None,
            eps: DEFAULT_EPS,
        }
    }

    pub fn with_reduce_range(mut self, reduce_range: bool) -> Self {
        self.reduce_range = reduce_range;
        self
    }

    pub fn with_range(mut self, quant_min: i64, quant_max: i64) -> Self {
        self.quant_min = Some(quant_min);
        self.quant_max = Some(quant_max);
        self
    }

    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    fn has_customized_qrange(&self) -> bool {
        self.quant_min.is_some() && self.quant_max.is_some()
    }

    /// Checks the spec the way torch's constructor does.
    pub fn validate(&self) -> Result<(), ObserveError> {
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(ObserveError::InvalidSpec(format!(
                "eps must be > 0, got {}",
                self.eps
            )));
        }
        if let (Some(lo), Some(hi)) = (self.quant_min, self.quant_max) {
            if !(lo <= 0 && 0 <= hi) {
                return Err(ObserveError::InvalidSpec(
                    "user-specified quantization range must include 0".into(),
                ));
            }
            if lo >= hi {
                return Err(ObserveError::InvalidSpec(
                    "quant_min must be < quant_max".into(),
                ));
            }
            let len = hi - lo + 1;
            if self.dtype.is_8bit_signed() && len > 256 {
                return Err(ObserveError::InvalidSpec(
                    "quantization range exceeds 256 values for an 8-bit type".into(),
                ));
            }
            if self.dtype == QDtype::Int32 && len > (1i64 << 32) {
                return Err(ObserveError::InvalidSpec(
                    "range exceeds 2^32 values".into(),
                ));
            }
        }
        Ok(())
    }

    /// `calculate_qmin_qmax`: the integer range actually used.
    ///
    /// Note torch's quirk kept here: a custom range is *also* halved (floor) by
    /// `reduce_range`.
    pub fn qrange(&self) -> (i64, i64) {
        if let (Some(lo), Some(hi)) = (self.quant_min, self.quant_max) {
            if self.reduce_range {
                (lo.div_euclid(2), hi.div_euclid(2))
            } else {
                (lo, hi)
            }
        } else {
            match self.dtype {
                QDtype::QInt8 | QDtype::Int8 => {
                    if self.reduce_range {
                        (-64, 63)
                    } else {
                        (-128, 127)
                    }
                }
                QDtype::QUInt8 | QDtype::UInt8 => {
                    if self.reduce_range {
                        (0, 127)
                    } else {
                        (0, 255)
                    }
                }
                QDtype::Int32 => (-(1i64 << 31), (1i64 << 31) - 1),
                QDtype::UInt16 => (0, (1i64 << 16) - 1),
                QDtype::Int16 => (-(1i64 << 15), (1i64 << 15) - 1),
            }
        }
    }

    /// The zero point torch uses for symmetric schemes.
    fn symmetric_zero_point(&self) -> i64 {
        let (qmin, qmax) = self.qrange();
        if self.dtype.is_8bit_unsigned() {
            if self.has_customized_qrange() {
                (qmin + qmax).div_euclid(2)
            } else {
                128
            }
        } else if self.dtype == QDtype::UInt16 {
            1 << 15
        } else {
            0
        }
    }
}

/// Scale(s) and zero point(s), one entry per tensor or per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: Vec<f32>,
    pub zero_point: Vec<i64>,
    pub quant_min: i64,
    pub quant_max: i64,
    pub dtype: QDtype,
    pub qscheme: QScheme,
    /// Channel axis for per-channel params (normalised to be non-negative).
    pub ch_axis: Option<usize>,
}

impl QParams {
    /// The single (scale, zero point) of per-tensor params.
    pub fn per_tensor(&self) -> Option<(f32, i64)> {
        if self.scale.len() == 1 && self.ch_axis.is_none() {
            Some((self.scale[0], self.zero_point[0]))
        } else {
            None
        }
    }
}

/// `torch.round` on float32: round half to even.
pub fn round_half_even(x: f32) -> f32 {
    x.round_ties_even()
}

/// Port of `_calculate_qparams(min_val, max_val)`.
///
/// `min_val`/`max_val` hold one value per tensor or per channel. Empty input,
/// or the per-tensor "never observed" state (`+inf`, `-inf`), gives torch's
/// default `(1.0, 0)`. `min > max` is an error, as in torch.
pub fn calculate_qparams(
    spec: &QuantSpec,
    min_val: &[f32],
    max_val: &[f32],
    ch_axis: Option<usize>,
) -> Result<QParams, ObserveError> {
    let (qmin, qmax) = spec.qrange();
    let mut out = QParams {
        scale: vec![1.0],
        zero_point: vec![0],
        quant_min: qmin,
        quant_max: qmax,
        dtype: spec.dtype,
        qscheme: spec.qscheme,
        ch_axis,
    };
    if min_val.len() != max_val.len() {
        return Err(ObserveError::Shape("min/max length mismatch".into()));
    }
    if min_val.is_empty() {
        return Ok(out);
    }
    if min_val.len() == 1
        && ch_axis.is_none()
        && min_val[0] == f32::INFINITY
        && max_val[0] == f32::NEG_INFINITY
    {
        return Ok(out);
    }
    if min_val.iter().zip(max_val).any(|(a, b)| a > b) {
        return Err(ObserveError::InvalidState(
            "min should be less than max".into(),
        ));
    }

    // float(quant_max - quant_min) is a Python float; torch casts it to f32
    // when dividing a float32 tensor by it.
    let range_f64 = (qmax - qmin) as f64;
    let mut scales = Vec::with_capacity(min_val.len());
    let mut zps = Vec::with_capacity(min_val.len());
    for (&mn, &mx) in min_val.iter().zip(max_val) {
        let min_neg = if mn < 0.0 { mn } else { 0.0f32 };
        let max_pos = if mx > 0.0 { mx } else { 0.0f32 };
        if spec.qscheme.is_symmetric() {
            let m = if -min_neg > max_pos {
                -min_neg
            } else {
                max_pos
            };
            let scale = m / ((range_f64 / 2.0) as f32);
            let scale = if scale > spec.eps { scale } else { spec.eps };
            scales.push(scale);
            zps.push(spec.symmetric_zero_point());
        } else {
            let scale = (max_pos - min_neg) / (range_f64 as f32);
            let scale = if scale > spec.eps { scale } else { spec.eps };
            let r = round_half_even(min_neg / scale) as f64 as i64;
            let zp = (qmin - r).clamp(qmin, qmax);
            scales.push(scale);
            zps.push(zp);
        }
    }
    out.scale = scales;
    out.zero_point = zps;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qranges() {
        let s = QuantSpec::new(QDtype::QUInt8, QScheme::PerTensorAffine);
        assert_eq!(s.qrange(), (0, 255));
        assert_eq!(s.with_reduce_range(true).qrange(), (0, 127));
        let s = QuantSpec::new(QDtype::QInt8, QScheme::PerTensorSymmetric);
        assert_eq!(s.with_reduce_range(true).qrange(), (-64, 63));
        assert_eq!(s.with_range(-127, 127).qrange(), (-127, 127));
        assert_eq!(
            s.with_range(-127, 127).with_reduce_range(true).qrange(),
            (-64, 63)
        );
    }

    #[test]
    fn symmetric_zero_points() {
        let q = |d, r: Option<(i64, i64)>| {
            let mut s = QuantSpec::new(d, QScheme::PerTensorSymmetric);
            if let Some((a, b)) = r {
                s = s.with_range(a, b);
            }
            calculate_qparams(&s, &[-1.0], &[2.0], None)
                .unwrap()
                .zero_point[0]
        };
        assert_eq!(q(QDtype::QUInt8, None), 128);
        assert_eq!(q(QDtype::QUInt8, Some((0, 127))), 63);
        assert_eq!(q(QDtype::QInt8, None), 0);
        assert_eq!(q(QDtype::UInt16, None), 32768);
    }

    #[test]
    fn uninitialised_defaults() {
        let s = QuantSpec::default();
        let p = calculate_qparams(&s, &[f32::INFINITY], &[f32::NEG_INFINITY], None).unwrap();
        assert_eq!(p.per_tensor(), Some((1.0, 0)));
    }
}
