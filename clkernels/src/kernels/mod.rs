//! Kernel families, each a `.cl` file beside the module that launches it.
