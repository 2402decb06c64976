//! Text checks shared by the input formats: UTF-8 validity and NUL bytes, with messages that say
//! where the bad byte is (in characters, never a byte index into text) and how to re-encode.

use std::path::Path;

/// The UTF-8 byte-order mark (Excel's "CSV UTF-8" and some Windows editors start files with it).
pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the first byte that is not UTF-8 sits: `"byte 0xE9 at character 4"`, or `None` when
/// `bytes` is UTF-8.
pub(crate) fn first_non_utf8(bytes: &[u8]) -> Option<String> {
    let err = std::str::from_utf8(bytes).err()?;
    let valid = &bytes[..err.valid_up_to()];
    let chars = std::str::from_utf8(valid).map_or(0, |s| s.chars().count());
    let byte = bytes[err.valid_up_to()];
    Some(format!("byte 0x{byte:02X} at character {}", chars + 1))
}

/// Where the first NUL byte of `text` sits: `"character 4"`.
pub(crate) fn first_nul(text: &str) -> Option<String> {
    let at = text.chars().position(|c| c == '\0')?;
    Some(format!("character {}", at + 1))
}

/// Whether `bytes` start with a UTF-16 byte-order mark (little or big endian).
pub(crate) fn starts_utf16(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF")
}

/// What to do about an input that is not UTF-8: the iconv command that re-encodes it.
/// `utf16`: the input looks like UTF-16 (else the likeliest culprit is Windows-1252).
pub(crate) fn reencode_hint(path: &Path, utf16: bool) -> String {
    let from = if utf16 { "UTF-16" } else { "WINDOWS-1252" };
    let name = match crate::paths::is_stdin(path) {
        true => "INPUT".to_string(),
        false => path.display().to_string(),
    };
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && !ext.contains('/') => (stem, format!(".{ext}")),
        _ => (name.as_str(), String::new()),
    };
    format!(
        "the input must be UTF-8: re-encode it, e.g. `iconv -f {from} -t UTF-8 {name} > {stem}.utf8{ext}` \
         (with the file's real encoding)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_characters() {
        assert_eq!(
            first_non_utf8("日本".as_bytes()).map(|_| ()),
            None,
            "valid UTF-8"
        );
        let mut bytes = "日本".as_bytes().to_vec();
        bytes.push(0xE9);
        assert_eq!(
            first_non_utf8(&bytes).as_deref(),
            Some("byte 0xE9 at character 3")
        );
        assert_eq!(first_nul("é\0").as_deref(), Some("character 2"));
    }

    #[test]
    fn hint_names_the_file() {
        let hint = reencode_hint(Path::new("data/in.csv"), false);
        assert!(
            hint.contains("iconv -f WINDOWS-1252 -t UTF-8 data/in.csv > data/in.utf8.csv"),
            "{hint}"
        );
        assert!(reencode_hint(Path::new("-"), true).contains("-f UTF-16 -t UTF-8 INPUT > INPUT"));
    }
}
