//! AWS shared configuration for [`crate::s3::S3Store`]: the profile named by `AWS_PROFILE`
//! (else `default`) in the credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`: `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`)
//! and the config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, section `[profile NAME]` or
//! `[default]`: `region`, `endpoint_url`). The environment wins over both files, as in the AWS
//! CLI. The files are INI text another program wrote: [`parse_ini`] accepts any text.

use object_store::aws::AmazonS3ConfigKey;

/// `(section, key, value)` of every `key = value` line, in order; comments (`#`, `;`), blank
/// lines and lines that are neither a section nor a setting are skipped.
pub fn parse_ini(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((
                section.clone(),
                k.trim().to_ascii_lowercase(),
                v.trim().to_string(),
            ));
        }
    }
    out
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn read(path: &std::path::Path) -> Result<Option<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read \"{}\": {e}", path.display())),
    }
}

fn file(var: &str, default: &str) -> Option<std::path::PathBuf> {
    env(var)
        .map(Into::into)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".aws").join(default)))
}

/// The `key = value` settings of section `name` of the INI file at `path`; `None` when there is
/// no such file or section.
fn section(
    path: Option<&std::path::PathBuf>,
    name: &str,
) -> Result<Option<Vec<(String, String)>>, String> {
    let Some(text) = path.map(|p| read(p)).transpose()?.flatten() else {
        return Ok(None);
    };
    let kv: Vec<(String, String)> = parse_ini(&text)
        .into_iter()
        .filter(|(s, _, _)| s == name)
        .map(|(_, k, v)| (k, v))
        .collect();
    Ok((!kv.is_empty()).then_some(kv))
}

/// Settings from the shared files that the environment does not already give. An error when
/// `AWS_PROFILE` names a profile neither file has (the message names the files, never a value).
pub fn settings() -> Result<Vec<(AmazonS3ConfigKey, String)>, String> {
    let explicit = env("AWS_PROFILE");
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let creds_path = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_path = file("AWS_CONFIG_FILE", "config");
    let config_section = match profile.as_str() {
        "default" => "default".to_string(),
        p => format!("profile {p}"),
    };
    let creds = section(creds_path.as_ref(), &profile)?;
    let config = section(config_path.as_ref(), &config_section)?;
    if explicit.is_some() && creds.is_none() && config.is_none() {
        let shown = |p: &Option<std::path::PathBuf>| {
            p.as_ref()
                .map_or("(no file)".to_string(), |p| format!("\"{}\"", p.display()))
        };
        return Err(format!(
            "AWS_PROFILE names profile \"{profile}\", which neither {} nor {} has",
            shown(&creds_path),
            shown(&config_path)
        ));
    }
    let keys_from_env = env("AWS_ACCESS_KEY_ID").is_some();
    let region_from_env = env("AWS_REGION").is_some() || env("AWS_DEFAULT_REGION").is_some();
    let endpoint_from_env = env("AWS_ENDPOINT_URL").is_some() || env("AWS_ENDPOINT").is_some();
    let mut out = Vec::new();
    for (k, v) in creds.unwrap_or_default() {
        let key = match k.as_str() {
            "aws_access_key_id" => AmazonS3ConfigKey::AccessKeyId,
            "aws_secret_access_key" => AmazonS3ConfigKey::SecretAccessKey,
            "aws_session_token" => AmazonS3ConfigKey::Token,
            _ => continue,
        };
        if !keys_from_env {
            out.push((key, v));
        }
    }
    for (k, v) in config.unwrap_or_default() {
        match k.as_str() {
            "region" if !region_from_env => out.push((AmazonS3ConfigKey::Region, v)),
            "endpoint_url" if !endpoint_from_env => out.push((AmazonS3ConfigKey::Endpoint, v)),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_lines_are_read_and_junk_is_skipped() {
        let t = "# c\n[default]\naws_access_key_id = AK\n junk line\n[profile x]\nRegion=garage\n;c\n[broken\nk=v=w\n";
        assert_eq!(
            parse_ini(t),
            vec![
                ("default".into(), "aws_access_key_id".into(), "AK".into()),
                ("profile x".into(), "region".into(), "garage".into()),
                ("profile x".into(), "k".into(), "v=w".into()),
            ]
        );
        assert!(parse_ini("\u{0}[]=\n=\n[").len() <= 2);
    }
}
