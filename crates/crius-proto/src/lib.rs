//! crius's internal protocols, generated from `proto/`.

#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("crius.v1");
}
