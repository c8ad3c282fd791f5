//! Network definitions (tch), with torchvision's parameter names.

pub mod mobilenet_v3;
pub mod swin_v2;
