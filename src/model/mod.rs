//! Models with Hugging Face parameter names.

pub mod attention;
pub mod bert;
pub mod dropout;
pub mod electra;
pub mod glm;
pub mod glm_fill;
pub mod heads;
pub mod modernbert;
