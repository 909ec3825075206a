//! The command language: `/runlink <verb> [argument]` on a comment's first line, any case.

/// What an operator said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The linked runbook helped.
    Right,
    /// It did not.
    Wrong,
    /// This runbook (an id or its URL) is the one that should have been linked.
    Use(String),
    /// No runbook covers this alarm yet.
    None,
}

impl Command {
    pub fn kind(&self) -> super::FeedbackKind {
        match self {
            Command::Right => super::FeedbackKind::Right,
            Command::Wrong => super::FeedbackKind::Wrong,
            Command::Use(_) => super::FeedbackKind::Use,
            Command::None => super::FeedbackKind::None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("`/runlink {0}` is not a command: use right, wrong, use <runbook> or none")]
    UnknownVerb(String),
    #[error("`/runlink use` needs the runbook: `/runlink use kubernetes/KubeNodeNotReady.md`")]
    MissingRunbook,
}

/// The command on the first non-blank line of `text`: `None` when that line is not a
/// `/runlink` command at all (an ordinary comment), `Some(Err)` when it is one runlink cannot
/// read. Only the first line counts, so a comment that quotes a command further down (or
/// runlink's own comment explaining the commands) never acts.
pub fn parse_command(text: &str) -> Option<Result<Command, CommandError>> {
    let line = text.lines().find(|l| !l.trim().is_empty())?.trim();
    let prefix = "/runlink";
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = &line[prefix.len()..];
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let mut words = rest.split_whitespace();
    let verb = words.next().unwrap_or("").to_lowercase();
    Some(match verb.as_str() {
        "right" => Ok(Command::Right),
        "wrong" => Ok(Command::Wrong),
        "none" => Ok(Command::None),
        "use" => match words.next() {
            // Markdown renders ids in backticks; people paste them that way too.
            Some(runbook) => Ok(Command::Use(
                runbook
                    .trim_matches(|c| matches!(c, '`' | '<' | '>'))
                    .to_string(),
            )),
            None => Err(CommandError::MissingRunbook),
        },
        other => Err(CommandError::UnknownVerb(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_read_from_the_first_line_in_any_case() {
        assert_eq!(parse_command("/runlink right"), Some(Ok(Command::Right)));
        assert_eq!(
            parse_command("\n  /RunLink WRONG  \nthanks"),
            Some(Ok(Command::Wrong))
        );
        assert_eq!(
            parse_command("/runlink use `kubernetes/KubeNodeNotReady.md`"),
            Some(Ok(Command::Use("kubernetes/KubeNodeNotReady.md".into())))
        );
        assert_eq!(
            parse_command("/runlink use https://runbooks.example.com/a.md#b please"),
            Some(Ok(Command::Use(
                "https://runbooks.example.com/a.md#b".into()
            )))
        );
        assert_eq!(parse_command("/runlink none"), Some(Ok(Command::None)));
    }

    #[test]
    fn other_comments_are_not_commands_and_bad_ones_say_why() {
        assert_eq!(parse_command("looks right to me\n/runlink wrong"), None);
        assert_eq!(parse_command("/runlinker wrong"), None);
        assert_eq!(parse_command(""), None);
        assert_eq!(
            parse_command("/runlink use"),
            Some(Err(CommandError::MissingRunbook))
        );
        assert_eq!(
            parse_command("/runlink maybe"),
            Some(Err(CommandError::UnknownVerb("maybe".into())))
        );
    }
}
