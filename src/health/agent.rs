//! The agent protocol (HAProxy's agent-check): the backend answers a connection with one line of
//! words separated by spaces or commas: `up`, `ready`, `down`, `fail`, `stopped`, `maint`, `drain`,
//! and a weight as a percentage (`75%`).

/// What an agent asks for beyond health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Advice {
    /// Take no new connections, as the administrative `drain` does.
    pub drain: bool,
    /// The share of the configured weight to use, 0-100.
    pub weight_percent: Option<u8>,
}

/// One agent line, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentReply {
    pub down: bool,
    pub advice: Advice,
}

/// The longest line read from an agent; anything longer is a misbehaving agent.
pub const MAX_AGENT_LINE: usize = 256;

pub fn parse_agent_line(line: &str) -> Result<AgentReply, String> {
    let mut reply = AgentReply {
        down: false,
        advice: Advice::default(),
    };
    let mut understood = false;
    for word in line
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        let lower = word.to_ascii_lowercase();
        match lower.as_str() {
            "up" | "ready" => reply.advice.drain = false,
            "down" | "fail" | "stopped" | "maint" => reply.down = true,
            "drain" => reply.advice.drain = true,
            _ => {
                let percent = lower
                    .strip_suffix('%')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| *n <= 100)
                    .ok_or_else(|| format!("agent said {word:?}"))?;
                reply.advice.weight_percent = Some(percent);
            }
        }
        understood = true;
    }
    if !understood {
        return Err("agent said nothing".into());
    }
    Ok(reply)
}

/// How a reply is reported: "agent up", "agent down", "agent drain 50%".
pub fn describe(reply: &AgentReply) -> String {
    let mut s = String::from(if reply.down {
        "agent down"
    } else if reply.advice.drain {
        "agent drain"
    } else {
        "agent up"
    });
    if let Some(p) = reply.advice.weight_percent {
        s.push_str(&format!(" {p}%"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(down: bool, drain: bool, weight: Option<u8>) -> AgentReply {
        AgentReply {
            down,
            advice: Advice {
                drain,
                weight_percent: weight,
            },
        }
    }

    #[test]
    fn words_and_percentages_are_read() {
        assert_eq!(parse_agent_line("up\n"), Ok(reply(false, false, None)));
        assert_eq!(parse_agent_line("DOWN\r\n"), Ok(reply(true, false, None)));
        assert_eq!(parse_agent_line("drain"), Ok(reply(false, true, None)));
        assert_eq!(parse_agent_line("50%"), Ok(reply(false, false, Some(50))));
        assert_eq!(parse_agent_line("ready, 75%"), Ok(reply(false, false, Some(75))));
        assert_eq!(parse_agent_line("maint 0%"), Ok(reply(true, false, Some(0))));
        assert_eq!(parse_agent_line("drain 100%"), Ok(reply(false, true, Some(100))));
        assert_eq!(describe(&reply(false, true, Some(50))), "agent drain 50%");
        assert_eq!(describe(&reply(true, false, None)), "agent down");
        assert_eq!(describe(&reply(false, false, Some(75))), "agent up 75%");
    }

    #[test]
    fn anything_else_is_refused_with_what_was_said() {
        assert_eq!(parse_agent_line(""), Err("agent said nothing".into()));
        assert_eq!(parse_agent_line(" \n"), Err("agent said nothing".into()));
        assert_eq!(parse_agent_line("up 101%"), Err("agent said \"101%\"".into()));
        assert_eq!(
            parse_agent_line("sideways"),
            Err("agent said \"sideways\"".into())
        );
        assert_eq!(parse_agent_line("-5%"), Err("agent said \"-5%\"".into()));
    }
}
