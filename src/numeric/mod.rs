//! Numeric suite: measuring how far a quantized model is from its float original.
//!
//! [`compare`] matches the float model's values with the dequantized values of the
//! quantized model (through the QDQ structure) and reports SQNR, MSE and cosine
//! similarity per value and per weight.

pub mod compare;
pub mod report;
pub mod sensitivity;
