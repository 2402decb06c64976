//! Prompt templates: `"Summarize {title}: {text}"` with `{{` / `}}` for literal braces.
//! Parsed once; filled per row from any lookup of field values.

use std::borrow::Cow;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(String),
}

/// A parsed prompt template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses a template; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        // Positions in messages are characters (1-based), never byte offsets.
        let mut chars = text.chars().enumerate().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, n) in chars.by_ref() {
                        if n == '}' {
                            closed = true;
                            break;
                        }
                        if n == '{' {
                            break;
                        }
                        name.push(n);
                    }
                    if !closed {
                        return Err(format!(
                            "template: `{{` at character {} is not closed by `}}` (write `{{{{` for a literal brace)",
                            at + 1
                        ));
                    }
                    if name.is_empty() {
                        return Err(format!(
                            "template: empty field name `{{}}` at character {}",
                            at + 1
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(name));
                }
                '}' => {
                    return Err(format!(
                    "template: unmatched `}}` at character {} (write `}}}}` for a literal brace)",
                    at + 1
                ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// The field names the template uses, in order of first use.
    pub fn fields(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for piece in &self.pieces {
            if let Piece::Field(name) = piece {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Fills the template; `lookup` returns a field's text or `None` when the row lacks it, in
    /// which case the missing field's name is returned as the error.
    pub fn fill<'a, F>(&'a self, mut lookup: F) -> Result<String, &'a str>
    where
        F: FnMut(&str) -> Option<Cow<'a, str>>,
    {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(name) => out.push_str(&lookup(name).ok_or(name.as_str())?),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(t: &str, pairs: &[(&str, &str)]) -> Result<String, String> {
        let template = Template::parse(t)?;
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        template
            .fill(|name| {
                owned
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Cow::Owned(v.clone()))
            })
            .map_err(|missing| format!("missing {missing}"))
    }

    #[test]
    fn fills_fields_and_literal_braces() {
        assert_eq!(
            fill(
                "Summarize {title}: {text} {{json}}",
                &[("title", "T"), ("text", "body")]
            ),
            Ok("Summarize T: body {json}".to_string())
        );
    }

    #[test]
    fn reports_missing_field() {
        assert_eq!(fill("{a}{b}", &[("a", "x")]), Err("missing b".to_string()));
    }

    #[test]
    fn rejects_unclosed_and_unmatched_braces() {
        assert!(Template::parse("hello {name")
            .unwrap_err()
            .contains("not closed"));
        assert!(Template::parse("hello }")
            .unwrap_err()
            .contains("unmatched"));
        assert!(Template::parse("{}").unwrap_err().contains("empty field"));
    }

    #[test]
    fn lists_fields_once() {
        let t = Template::parse("{a} {b} {a}").unwrap();
        assert_eq!(t.fields(), vec!["a", "b"]);
    }
}
