//! Models with Hugging Face parameter names.

pub mod bert;
pub mod glm;
pub mod heads;
