//! Option values named by text (`--input-format csv`, `--via batch`): each such enum lists its
//! values once, with their names and help lines, and the command line builds its parser and
//! `--help` from that list — so the library does not depend on the command-line parser.

/// An enum whose values have names.
pub trait Choice: Sized + Copy + PartialEq + 'static {
    /// Every value, with its name and its help line.
    const CHOICES: &'static [(Self, &'static str, &'static str)];

    /// The value of a name (exact, as the command line writes it).
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(value, _, _)| *value)
    }

    /// The name of a value.
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(value, _, _)| *value == self)
            .map_or("", |(_, name, _)| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{Fallback, Via};
    use crate::input::InputFormat;
    use crate::output::format::OutputFormat;
    use crate::sim::{AnswerBody, ErrorStyle, LimitStyle};

    /// Every value is listed once, and its name leads back to it.
    fn round_trips<T: Choice + std::fmt::Debug>(count: usize) {
        assert_eq!(T::CHOICES.len(), count);
        for (value, name, _) in T::CHOICES {
            assert_eq!(T::from_name(name), Some(*value), "{name}");
            assert_eq!(value.name(), *name);
        }
        assert_eq!(T::from_name("no-such-value"), None);
    }

    #[test]
    fn every_choice_round_trips() {
        round_trips::<InputFormat>(4);
        round_trips::<OutputFormat>(3);
        round_trips::<Via>(2);
        round_trips::<Fallback>(2);
        round_trips::<AnswerBody>(2);
        round_trips::<LimitStyle>(2);
        round_trips::<ErrorStyle>(3);
        assert_eq!(OutputFormat::OpenaiBatch.name(), "openai-batch");
    }
}
