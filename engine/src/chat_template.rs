//! Chat templates of the supported families.
