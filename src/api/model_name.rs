//! Model names as APIs write them: a dated snapshot (`gpt-5.2-2025-12-11`) names its model
//! (`gpt-5.2`) for prices, `--model` lists and resume. Below both `api/` and `cost.rs`, which
//! each need it.

/// `name-YYYY-MM-DD` → `name`. Works on bytes from the end, so a name of any characters is safe.
pub(crate) fn strip_snapshot_date(model: &str) -> Option<&str> {
    let bytes = model.as_bytes();
    let tail = bytes.get(bytes.len().checked_sub(11)?..)?;
    let is_date = tail[0] == b'-'
        && tail[5] == b'-'
        && tail[8] == b'-'
        && [1, 2, 3, 4, 6, 7, 9, 10]
            .iter()
            .all(|&i| tail[i].is_ascii_digit());
    // The tail is ASCII, so the cut before it is a character boundary.
    is_date.then(|| &model[..model.len() - 11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_whole_date_at_the_end_is_cut() {
        assert_eq!(strip_snapshot_date("gpt-5.2-2025-12-11"), Some("gpt-5.2"));
        assert_eq!(strip_snapshot_date("é-2025-12-11"), Some("é"));
        for name in [
            "gpt-5.2",
            "2025-12-11",
            "x-2025-12-1",
            "x-2025_12-11",
            "",
            "é",
        ] {
            assert_eq!(strip_snapshot_date(name), None, "{name}");
        }
    }
}
