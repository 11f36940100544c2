//! Who holds a reservation, in upstream host-local's file format.

/// Upstream's separator between container ID and ifname.
const LINE_BREAK: &str = "\r\n";

/// Who holds a reservation. `ifname` is None for reservations written before upstream recorded
/// it; those belong to every ifname of the container, as upstream treats them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub id: String,
    pub ifname: Option<String>,
}

impl Owner {
    pub fn new(id: &str, ifname: &str) -> Owner {
        Owner {
            id: id.to_string(),
            ifname: Some(ifname.to_string()),
        }
    }

    /// The same container in the old format (no ifname).
    pub fn old_format(&self) -> Owner {
        Owner {
            id: self.id.clone(),
            ifname: None,
        }
    }

    /// A reservation file's content, compared as upstream does (whitespace trimmed). None for an
    /// empty or binary file: a reservation whose writer was killed.
    pub fn parse(bytes: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(bytes).ok()?.trim();
        if text.is_empty() || text.contains('\0') {
            return None;
        }
        Some(match text.split_once(LINE_BREAK) {
            Some((id, ifname)) => Owner {
                id: id.to_string(),
                ifname: Some(ifname.to_string()),
            },
            None => Owner {
                id: text.to_string(),
                ifname: None,
            },
        })
    }

    /// The file content upstream writes: `<id>\r\n<ifname>`, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.ifname {
            Some(ifname) => format!("{}{LINE_BREAK}{ifname}", self.id).into_bytes(),
            None => self.id.clone().into_bytes(),
        }
    }

    /// File name in index/: `<id>@<ifname>`, or `<id>` for the old format ('@' cannot be in an
    /// ID). None when the owner cannot be named that way; such owners are found by a scan.
    pub fn key_name(&self) -> Option<String> {
        let plain = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c == '/' || c == '\0' || c.is_whitespace())
        };
        if !plain(&self.id) || self.id.contains('@') || self.id.starts_with('.') {
            return None;
        }
        let name = match &self.ifname {
            Some(ifname) if plain(ifname) => format!("{}@{ifname}", self.id),
            Some(_) => return None,
            None => self.id.clone(),
        };
        (name.len() <= 255).then_some(name)
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ifname {
            Some(i) => write!(f, "container {} ifname {i}", self.id),
            None => write!(f, "container {} (reservation without ifname)", self.id),
        }
    }
}
