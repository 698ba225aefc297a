//! Tests of the module (to be written).
