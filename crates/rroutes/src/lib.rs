//! rroutes (not yet written).
