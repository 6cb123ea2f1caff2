//! QConfig and QConfigMapping: how each tensor is quantized, and which
//! nodes it applies to (PyTorch's `QConfig` / `QConfigMapping` over ONNX).
//!
//! Priorities, lowest to highest, as in PyTorch: global, per op type, per
//! node-name regex (first registered match wins), per node name. Each level
//! may say `None`: keep the node in float.
//!
//! File format (JSON), every key optional:
//!
//! ```json
//! {
//!   "preset": "fbgemm",
//!   "global": {"activation": {"observer": "histogram", "dtype": "quint8", "reduce_range": true},
//!              "weight": {"observer": "per-channel-minmax", "dtype": "qint8", "qscheme": "per_channel_symmetric"}},
//!   "object_type": {"Softmax": null},
//!   "name_regex": [["^/encoder/.*", null]],
//!   "name": {"/fc/Gemm": null},
//!   "weight_only": ["/head/Conv"],
//!   "float16_weights": ["/fc/Gemm"]
//! }
//! ```

use crate::error::{Error, Result};
use crate::observe::{
    EntropyObserver, HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver, MseObserver, ObserverState, PerChannelMinMaxObserver,
    PercentileObserver, QDtype, QScheme, QuantSpec,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which observer collects a tensor's statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ObserverKind {
    #[serde(rename = "minmax")]
    MinMax,
    MovingAverage,
    Histogram,
    Percentile,
    Entropy,
    Mse,
    #[serde(rename = "per-channel-minmax")]
    PerChannelMinMax,
    MovingAveragePerChannel,
}

impl ObserverKind {
    /// Parses a CLI name: `minmax`, `moving-average`, `histogram`, `percentile`, `entropy`, `mse`,
    /// `per-channel-minmax`, `moving-average-per-channel`.
    pub fn parse(s: &str) -> Result<ObserverKind> {
        Ok(match s {
            "minmax" | "min-max" => ObserverKind::MinMax,
            "moving-average" => ObserverKind::MovingAverage,
            "histogram" => ObserverKind::Histogram,
            "percentile" => ObserverKind::Percentile,
            "entropy" => ObserverKind::Entropy,
            "mse" => ObserverKind::Mse,
            "per-channel-minmax" => ObserverKind::PerChannelMinMax,
            "moving-average-per-channel" => ObserverKind::MovingAveragePerChannel,
            other => {
                return Err(Error::invalid(format!(
                    "unknown observer `{other}` (minmax, moving-average, histogram, percentile, entropy, mse, \
                     per-channel-minmax, moving-average-per-channel)"
                )))
            }
        })
    }

    pub fn is_per_channel(&self) -> bool {
        matches!(
            self,
            ObserverKind::PerChannelMinMax | ObserverKind::MovingAveragePerChannel
        )
    }
}

/// An observer and what it quantizes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObserverConfig {
    pub observer: ObserverKind,
    #[serde(default = "default_dtype")]
    pub dtype: QDtype,
    #[serde(default = "default_qscheme")]
    pub qscheme: QScheme,
    #[serde(default)]
    pub reduce_range: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant_min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant_max: Option<i64>,
    /// Percentile to keep (percentile observer), e.g. 99.999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Averaging constant (moving-average observers), default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub averaging_constant: Option<f64>,
}

fn default_dtype() -> QDtype {
    QDtype::QUInt8
}

fn default_qscheme() -> QScheme {
    QScheme::PerTensorAffine
}

impl ObserverConfig {
    pub fn new(observer: ObserverKind, dtype: QDtype, qscheme: QScheme) -> Self {
        ObserverConfig {
            observer,
            dtype,
            qscheme,
            reduce_range: false,
            quant_min: None,
            quant_max: None,
            percentile: None,
            averaging_constant: None,
        }
    }

    pub fn with_reduce_range(mut self, r: bool) -> Self {
        self.reduce_range = r;
        self
    }

    /// The quantization spec (dtype, scheme, range).
    pub fn spec(&self) -> QuantSpec {
        let mut s = QuantSpec::new(self.dtype, self.qscheme).with_reduce_range(self.reduce_range);
        if let (Some(lo), Some(hi)) = (self.quant_min, self.quant_max) {
            s = s.with_range(lo, hi);
        }
        s
    }

    /// A fresh observer; `ch_axis` for per-channel ones.
    pub fn build(&self, ch_axis: i64) -> Result<ObserverState> {
        let spec = self.spec();
        let err = |e: crate::observe::ObserveError| {
            Error::invalid(format!("observer {:?}: {e}", self.observer))
        };
        let avg = self
            .averaging_constant
            .unwrap_or(crate::observe::DEFAULT_AVERAGING_CONSTANT);
        Ok(match self.observer {
            ObserverKind::MinMax => ObserverState::MinMax(MinMaxObserver::new(spec).map_err(err)?),
            ObserverKind::MovingAverage => ObserverState::MovingAverageMinMax(
                MovingAverageMinMaxObserver::new(spec, avg).map_err(err)?,
            ),
            ObserverKind::Histogram => {
                ObserverState::Histogram(HistogramObserver::new(spec).map_err(err)?)
            }
            ObserverKind::Percentile => ObserverState::Percentile(
                PercentileObserver::new(
                    spec,
                    self.percentile
                        .unwrap_or(crate::observe::DEFAULT_PERCENTILE),
                    crate::observe::DEFAULT_PERCENTILE_BINS,
                )
                .map_err(err)?,
            ),
            ObserverKind::Entropy => ObserverState::Entropy(
                EntropyObserver::new(
                    spec,
                    crate::observe::DEFAULT_ENTROPY_BINS,
                    crate::observe::DEFAULT_ENTROPY_QUANTIZED_BINS,
                )
                .map_err(err)?,
            ),
            ObserverKind::Mse => ObserverState::Mse(MseObserver::new(spec).map_err(err)?),
            ObserverKind::PerChannelMinMax => ObserverState::PerChannelMinMax(
                PerChannelMinMaxObserver::new(spec, ch_axis).map_err(err)?,
            ),
            ObserverKind::MovingAveragePerChannel => ObserverState::MovingAveragePerChannelMinMax(
                MovingAveragePerChannelMinMaxObserver::new(spec, ch_axis, avg).map_err(err)?,
            ),
        })
    }
}

/// How a node's activations and weights are quantized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QConfig {
    pub activation: ObserverConfig,
    pub weight: ObserverConfig,
}

impl QConfig {
    /// PyTorch's `get_default_qconfig(backend)`: `fbgemm` (histogram quint8
    /// activations, per-channel symmetric qint8 weights) or `qnnpack`
    /// (histogram activations; per-tensor symmetric weights).
    ///
    /// `qnnpack` stores its full-range weights as symmetric quint8 (zero point
    /// 128, the grid of symmetric qint8 shifted by 128, as QNNPACK packs them):
    /// ONNX Runtime runs u8 weights on its exact u8×u8 kernels, whereas its AVX2
    /// u8×s8 path (`vpmaddubsw`) saturates on full-range s8 weights, so the
    /// model would score lower in it than the accuracy guard measured
    /// (transformer_layer: 21.5 dB against 31.7 on the calibration data).
    /// `--weight-dtype int8` gives the s8 form back.
    ///
    /// `fbgemm` reduces the range where u8×s8 kernels without VNNI would
    /// saturate (`vpmaddubsw` pair sums): PyTorch takes the bit from the
    /// activations, onnxq from the weights (7-bit, [-64, 63]), as ONNX
    /// Runtime's `reduce_range` does. The guarantee is the same (255·64·2 <
    /// 2^15), activations keep their full 8 bits, and a Relu6/Clip(0, 6)
    /// output range then maps onto all of u8, so ONNX Runtime can drop the
    /// Clip and run the Conv in int8 (inverted_residual: 0.4× → 1.0× fp32).
    pub fn preset(backend: &str) -> Result<QConfig> {
        match backend {
            "fbgemm" | "x86" => Ok(QConfig {
                activation: ObserverConfig::new(
                    ObserverKind::Histogram,
                    QDtype::QUInt8,
                    QScheme::PerTensorAffine,
                ),
                weight: ObserverConfig::new(
                    ObserverKind::PerChannelMinMax,
                    QDtype::QInt8,
                    QScheme::PerChannelSymmetric,
                )
                .with_reduce_range(true),
            }),
            "qnnpack" => Ok(QConfig {
                activation: ObserverConfig::new(
                    ObserverKind::Histogram,
                    QDtype::QUInt8,
                    QScheme::PerTensorAffine,
                ),
                weight: ObserverConfig::new(
                    ObserverKind::MinMax,
                    QDtype::QUInt8,
                    QScheme::PerTensorSymmetric,
                ),
            }),
            other => Err(Error::invalid(format!(
                "unknown backend `{other}` (fbgemm, qnnpack)"
            ))),
        }
    }
}

/// Which QConfig applies to which node (`None` keeps the node in float).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct QConfigMapping {
    #[serde(default)]
    pub global: Option<QConfig>,
    #[serde(default)]
    pub object_type: BTreeMap<String, Option<QConfig>>,
    /// In priority order: the first matching regex wins.
    #[serde(default)]
    pub name_regex: Vec<(String, Option<QConfig>)>,
    #[serde(default)]
    pub name: BTreeMap<String, Option<QConfig>>,
    /// Units (by first node name) kept float with int8 weights: their activations
    /// stay float, their Conv/Gemm/MatMul weights are stored int8 behind a
    /// DequantizeLinear (what the accuracy fallback chooses).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub weight_only: std::collections::BTreeSet<String>,
    /// Float units (by first node name) whose float weights are stored as float16 behind
    /// a Cast (the `store-weights-fp16` pass; what the accuracy fallback chooses when
    /// the target allows).
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub float16_weights: std::collections::BTreeSet<String>,
    #[serde(skip)]
    compiled: Vec<regex::Regex>,
}

impl PartialEq for QConfigMapping {
    fn eq(&self, o: &Self) -> bool {
        self.global == o.global
            && self.object_type == o.object_type
            && self.name_regex == o.name_regex
            && self.name == o.name
            && self.weight_only == o.weight_only
            && self.float16_weights == o.float16_weights
    }
}

/// What the mapping says for one node, and which rule said it.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved<'a> {
    pub qconfig: Option<&'a QConfig>,
    /// `global`, `object_type Conv`, `name_regex ^/enc`, `name /fc/Gemm`, or `default`.
    pub rule: String,
}

#[derive(Deserialize)]
struct MappingFile {
    preset: Option<String>,
    #[serde(flatten)]
    mapping: QConfigMapping,
}

impl QConfigMapping {
    /// PyTorch's `get_default_qconfig_mapping(backend)`: the preset globally;
    /// ConvTranspose weights per-tensor on fbgemm (no per-channel kernel).
    pub fn preset(backend: &str) -> Result<QConfigMapping> {
        let q = QConfig::preset(backend)?;
        let mut m = QConfigMapping {
            global: Some(q.clone()),
            ..Default::default()
        };
        // Softmax and LayerNormalization stay float by default: int8 there
        // costs accuracy for little speed (ONNX Runtime's default too).
        m.object_type.insert("Softmax".into(), None);
        m.object_type.insert("LayerNormalization".into(), None);
        if matches!(backend, "fbgemm" | "x86") {
            let mut ct = q;
            ct.weight = ObserverConfig::new(
                ObserverKind::MinMax,
                QDtype::QInt8,
                QScheme::PerTensorSymmetric,
            );
            m.object_type.insert("ConvTranspose".into(), Some(ct));
        }
        m.compile()?;
        Ok(m)
    }

    /// Reads a JSON mapping; `"preset": "fbgemm"` starts from that preset.
    pub fn from_json(text: &str) -> Result<QConfigMapping> {
        let f: MappingFile =
            serde_json::from_str(text).map_err(|e| Error::invalid(format!("qconfig: {e}")))?;
        let mut m = match f.preset.as_deref() {
            Some(p) => QConfigMapping::preset(p)?,
            None => QConfigMapping::default(),
        };
        if f.mapping.global.is_some() {
            m.global = f.mapping.global;
        }
        m.object_type.extend(f.mapping.object_type);
        m.name_regex.extend(f.mapping.name_regex);
        m.name.extend(f.mapping.name);
        m.weight_only.extend(f.mapping.weight_only);
        m.float16_weights.extend(f.mapping.float16_weights);
        m.compile()?;
        Ok(m)
    }

    pub fn from_file(path: &std::path::Path) -> Result<QConfigMapping> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| e.in_file(path))
    }

    /// The mapping as JSON (the format [`QConfigMapping::from_json`] reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("serialisable")
    }

    fn compile(&mut self) -> Result<()> {
        self.compiled = self
            .name_regex
            .iter()
            .map(|(r, _)| {
                regex::Regex::new(r)
                    .map_err(|e| Error::invalid(format!("qconfig: bad name regex `{r}`: {e}")))
            })
            .collect::<Result<_>>()?;
        Ok(())
    }

    pub fn set_global(&mut self, q: Option<QConfig>) -> &mut Self {
        self.global = q;
        self
    }
    pub fn set_object_type(&mut self, op_type: &str, q: Option<QConfig>) -> &mut Self {
        self.object_type.insert(op_type.into(), q);
        self
    }
    pub fn set_name_regex(&mut self, re: &str, q: Option<QConfig>) -> Result<&mut Self> {
        self.name_regex.push((re.into(), q));
        self.compile()?;
        Ok(self)
    }
    pub fn set_name(&mut self, name: &str, q: Option<QConfig>) -> &mut Self {
        self.name.insert(name.into(), q);
        self
    }

    /// The QConfig for a node, by PyTorch's priorities.
    pub fn resolve(&self, op_type: &str, name: &str) -> Resolved<'_> {
        if let Some(q) = self.name.get(name) {
            return Resolved {
                qconfig: q.as_ref(),
                rule: format!("name {name}"),
            };
        }
        for ((re_text, q), re) in self.name_regex.iter().zip(&self.compiled) {
            if re.is_match(name) {
                return Resolved {
                    qconfig: q.as_ref(),
                    rule: format!("name_regex {re_text}"),
                };
            }
        }
        if let Some(q) = self.object_type.get(op_type) {
            return Resolved {
                qconfig: q.as_ref(),
                rule: format!("object_type {op_type}"),
            };
        }
        match &self.global {
            Some(q) => Resolved {
                qconfig: Some(q),
                rule: "global".into(),
            },
            None => Resolved {
                qconfig: None,
                rule: "no global qconfig".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_pytorch() {
        let mut m = QConfigMapping::preset("fbgemm").unwrap();
        m.set_object_type("Gemm", None);
        m.set_name_regex("^/layer1/", None).unwrap();
        let q = QConfig::preset("qnnpack").unwrap();
        m.set_name("/layer1/conv", Some(q.clone()));
        assert_eq!(m.resolve("Conv", "/layer2/conv").rule, "global");
        assert_eq!(m.resolve("Gemm", "/fc").qconfig, None);
        assert_eq!(m.resolve("Conv", "/layer1/x").rule, "name_regex ^/layer1/");
        assert_eq!(m.resolve("Conv", "/layer1/conv").qconfig, Some(&q));
        assert!(!m
            .resolve("ConvTranspose", "/up")
            .qconfig
            .unwrap()
            .weight
            .observer
            .is_per_channel());
    }

    #[test]
    fn json_round_trip_and_errors() {
        let text = r#"{"preset": "fbgemm", "object_type": {"Softmax": null},
                       "name_regex": [["^/enc", null]], "name": {"/fc/Gemm": null},
                       "global": {"activation": {"observer": "percentile", "percentile": 99.99},
                                  "weight": {"observer": "per-channel-minmax", "dtype": "qint8", "qscheme": "per_channel_symmetric"}}}"#;
        let m = QConfigMapping::from_json(text).unwrap();
        assert_eq!(
            m.resolve("Conv", "x")
                .qconfig
                .unwrap()
                .activation
                .percentile,
            Some(99.99)
        );
        assert_eq!(m.resolve("Softmax", "s").qconfig, None);
        let back = QConfigMapping::from_json(&m.to_json()).unwrap();
        assert_eq!(back.resolve("Conv", "/enc1").rule, "name_regex ^/enc");
        assert!(
            QConfigMapping::from_json(r#"{"name_regex": [["(", null]]}"#)
                .unwrap_err()
                .to_string()
                .contains("bad name regex")
        );
        assert!(
            QConfigMapping::from_json(r#"{"global": {"activation": {"observer": "magic"}}}"#)
                .is_err()
        );
    }
}
