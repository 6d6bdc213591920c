//! The value rules every section checks against: names, regions, ids.
//! Each returns the message a user sees, naming the key.

pub(super) type Checked<T = ()> = Result<T, String>;

/// 1-`max` lowercase letters, digits and inner dashes (app, environment
/// and task names: they end up in tags, keys and AMI names).
pub(super) fn name(key: &str, value: &str, max: usize) -> Checked {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} must be 1-{max} lowercase letters, digits and inner dashes"
        ))
    }
}

/// A CloudWatch alarm's name: 1-255 characters, not only spaces.
pub(super) fn alarm_name(key: &str, value: &str) -> Checked {
    if value.trim().is_empty() || value.len() > 255 {
        Err(format!("{key}: {value:?} is not a CloudWatch alarm name"))
    } else {
        Ok(())
    }
}

pub(super) fn region(key: &str, value: &str) -> Checked {
    let parts: Vec<&str> = value.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an AWS region name such as us-east-1"
        ))
    }
}

pub(super) fn bucket(value: &str) -> Checked {
    let ok = (3..=63).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "state.bucket: {value:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)"
        ))
    }
}

/// An AWS id of the form `prefix` + hex (`subnet-0a1b`, `sg-0a1b`, `ami-0a1b`).
pub(super) fn prefixed(key: &str, value: &str, prefix: &str) -> Checked {
    let rest = value.strip_prefix(prefix).unwrap_or_default();
    if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an id of the form {prefix}..."
        ))
    }
}

pub(super) fn instance_type(key: &str, value: &str) -> Checked {
    let ok = value.split_once('.').is_some_and(|(family, size)| {
        !family.is_empty()
            && !size.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {value:?} is not an instance type such as t3.micro"
        ))
    }
}

pub(super) fn env_name(key: &str, name: &str) -> Checked {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key}: {name:?} is not an environment variable name"
        ))
    }
}

pub(super) fn positive(key: &str, value: std::time::Duration) -> Checked {
    if value.is_zero() {
        Err(format!("{key}: must be more than zero"))
    } else {
        Ok(())
    }
}
