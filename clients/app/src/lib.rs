#![doc = include_str!("../README.md")]

pub mod api;
pub mod service;
pub mod setup;
pub mod views;

pub use api::{
    BodyView, Connection, ContactView, Failure, Image, MeView, MessageId, MessageView, Pixels,
    Purpose, Request, SafetyView, StatusView, Update,
};
pub use postern_core::courier::DeliveryState;
pub use service::{Service, ServiceConfig};

/// 60 safety-number digits as 12 groups of 5, three rows of four.
pub fn group_digits(digits: &str) -> Vec<String> {
    let chars: Vec<char> = digits.chars().collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    #[test]
    fn sixty_digits_are_twelve_groups_of_five() {
        let d: String = (0..60).map(|i| char::from(b'0' + (i % 10) as u8)).collect();
        let g = super::group_digits(&d);
        assert_eq!(g.len(), 12);
        assert!(g.iter().all(|x| x.len() == 5));
        assert_eq!(g[0], "01234");
        assert_eq!(g.concat(), d);
    }
}
