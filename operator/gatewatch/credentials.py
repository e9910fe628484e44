"""Credentials in command lines, found and redacted: one table of patterns.

Alerts leave the cluster; an exec command or a container's args can carry a
credential (``curl -H "Authorization: Bearer ..."``, ``mysql -pS3cret``,
``--password=...``, ``API_TOKEN=...``, a JWT or a vendor token). ``redact_text``
replaces the secret part of each with ``[redacted]`` and keeps the rest (the
header name, the option, the variable name), so the alert still says what was
run. ``redact_argv`` does the same for an argument vector, where the secret may
be the element after an option (``["mysql", "--password", "S3cret"]``).

Why a table of our own: detect-secrets (Yelp) was evaluated. Its detectors
report what they found, not where: for a GitHub token it yields the prefix
``ghp``, for a JWT the part before the signature, so a redaction built on it
leaves the rest of the secret in the alert; and it has no detector for the
command-line shapes above (an opaque bearer token, ``--password=``, ``-p``).
The vendor prefixes below follow the ones it and the vendors document.

Every pattern is linear in the text: no quantified group contains another
quantifier that could match the same text, and what a failing match may scan
from each of its starting points is bounded (``{0,200}``), so repeating a
pattern's prefix cannot make it quadratic. Strings are cut at
``MAX_SCANNED_CHARS`` first.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

REDACTED = "[redacted]"
# Longer strings are cut (and say so) before they are scanned: alerts stay bounded too.
MAX_SCANNED_CHARS = 16_384

# Words that make a name a credential's: an option (--db-password), a variable (API_TOKEN).
_SECRET_WORD = (
    r"(?:password|passwd|passphrase|pass|pwd|token|secret|credentials?|api[-_]?key|access[-_]?key"
    r"|secret[-_]?key|private[-_]?key|client[-_]?secret|auth)"
)
# A value as a shell would read it: quoted, or up to whitespace or a shell separator.
_VALUE = r"""(?P<secret>"[^"]*"|'[^']*'|[^\s"';&|]+)"""


@dataclass(frozen=True, slots=True)
class CredentialPattern:
    name: str
    pattern: re.Pattern[str]  # the group named "secret" is what gets redacted
    example: str  # a string it must redact (tests check every row against its example)


def _pattern(name: str, regex: str, example: str, *, flags: int = 0) -> CredentialPattern:
    return CredentialPattern(name, re.compile(regex, flags), example)


CREDENTIAL_PATTERNS: tuple[CredentialPattern, ...] = (
    # Headers: the scheme stays readable (Bearer, Basic), the credential does not.
    _pattern(
        "authorization header",
        r"\b(?:proxy-)?authorization\s*:\s*(?!(?:digest|aws4-hmac-sha256|oauth)\s)"
        r"(?:(?:bearer|basic|token|negotiate|apikey|ntlm)\s+)?(?P<secret>[^\s\"'\[][^\s\"']*)",
        'curl -H "Authorization: Bearer abc.def" https://api',
        flags=re.IGNORECASE,
    ),
    _pattern(  # schemes whose credentials are parameters: all of them, to the closing quote
        "authorization header with parameters",
        r"\b(?:proxy-)?authorization\s*:\s*(?:digest|aws4-hmac-sha256|oauth)\s+"
        r"(?P<secret>(?:[^\"'\r\n]|\"[^\"\r\n]*\")+)",
        'curl -H \'Authorization: Digest username="bot", response="6629fae4"\' https://api',
        flags=re.IGNORECASE,
    ),
    _pattern(
        "credential header",
        r"\b(?:x-api-key|api-key|x-auth-token|x-vault-token|private-token|job-token|x-amz-security-token"
        r"|cookie|set-cookie)\s*:\s*(?P<secret>[^\s\"'][^\"'\r\n]*)",
        "curl -H 'X-Api-Key: 12345' https://api",
        flags=re.IGNORECASE,
    ),
    # URL user info: https://user:password@host
    _pattern(
        "url credentials",
        r"\b[a-z][a-z0-9+.-]{0,30}://[^/\s:@\"']+:(?P<secret>[^/\s@\"']+)@",
        "git clone https://bot:hunter2@git.example.com/repo",
        flags=re.IGNORECASE,
    ),
    # Options: --password=x, --db-password x, -token x. `--password-file x` is a path and stays.
    _pattern(
        "credential option",
        rf"(?<![\w-])--?(?:[a-z0-9]+[-_.])*{_SECRET_WORD}(?:=|\s+){_VALUE}",
        "app --db-password=hunter2 --verbose",
        flags=re.IGNORECASE,
    ),
    # Assignments: PASSWORD=x, export API_TOKEN=x, -e AWS_SECRET_ACCESS_KEY=x.
    _pattern(
        "credential variable",
        rf"(?<![\w-])(?:[a-z0-9]+_)*{_SECRET_WORD}\s*=\s*{_VALUE}",
        "env DB_PASSWORD=hunter2 ./run",
        flags=re.IGNORECASE,
    ),
    # Command lines whose password option is a short one: mysql -pS3cret, sshpass -p x, redis-cli -a x.
    _pattern(
        "mysql -p",
        r"\b(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlpump|mariadb|mariadb-dump)"
        r"\b[^|;&\n]{0,200}?\s-p(?P<secret>[^\s\"';&|]+)",
        "mysql -u root -phunter2 shop",
    ),
    _pattern(
        "password short option",
        r"\b(?:sshpass\s+-p|redis-cli\b[^|;&\n]{0,200}?\s-a|mongo(?:sh)?\b[^|;&\n]{0,200}?\s-p)"
        r"\s*(?P<secret>[^\s\"';&|-][^\s\"';&|]*)",
        "sshpass -p hunter2 ssh host",
    ),
    _pattern(
        "user:password option",
        r"(?<![\w-])(?:-u|--user|--proxy-user)(?:=|\s+)[^\s:\"']+:(?P<secret>[^\s\"';&|]+)",
        "curl -u admin:hunter2 https://api",
    ),
    # Tokens recognisable by their shape, anywhere.
    _pattern(
        "JSON web token",
        r"(?P<secret>\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)",
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ),
    _pattern(
        "private key",
        # Up to the END line or, for a key cut short, as far as it goes: never a rescan for an
        # END that is not there (that made a text of repeated BEGIN lines quadratic).
        r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----(?P<secret>(?:(?!-----END)[\s\S]){1,10000})",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIB\n-----END RSA PRIVATE KEY-----",
    ),
    _pattern(
        "vendor token",
        r"(?P<secret>\b(?:"
        r"gh[pousr]_[A-Za-z0-9]{36,255}"  # GitHub
        r"|github_pat_[A-Za-z0-9_]{22,255}"
        r"|gl(?:pat|dt|rt|ptt|cbt|ft|soat)-[A-Za-z0-9_-]{20,}"  # GitLab
        r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}"  # AWS access key id
        r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
        r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
        r"|sk-[A-Za-z0-9_-]{20,}"  # OpenAI, Anthropic
        r"|AIza[A-Za-z0-9_-]{35}"  # Google API key
        r"|npm_[A-Za-z0-9]{36}"  # npm
        r"|pypi-[A-Za-z0-9_-]{50,}"  # PyPI
        r"|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}"  # SendGrid
        r"|hv[sbr]\.[A-Za-z0-9_-]{20,}"  # HashiCorp Vault
        r"|dop_v1_[a-f0-9]{64}"  # DigitalOcean
        r"))",
        "git clone https://ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/x/y",
    ),
    _pattern(
        "slack webhook",
        r"\bhttps://hooks\.slack\.com/services/(?P<secret>[A-Za-z0-9/]+)",
        "curl https://hooks.slack.com/services/T000/B000/XXXX",
    ),
)

# In an argument vector, these options take the credential as the next element.
_SECRET_OPTION = re.compile(rf"--?(?:[a-z0-9]+[-_.])*{_SECRET_WORD}", re.IGNORECASE)
# Programs whose short option takes a password as the next element.
_PASSWORD_FLAGS = {"sshpass": "-p", "redis-cli": "-a", "mongo": "-p", "mongosh": "-p"}
# Options whose next element is ``user:password`` (curl, wget's --user, --proxy-user): as the
# text row "user:password option", for a vector where the option and its value are two elements.
_USER_PASSWORD_OPTIONS = frozenset({"-u", "--user", "-U", "--proxy-user"})
_MYSQL_CLIENTS = frozenset({
    "mysql", "mysqldump", "mysqladmin", "mysqlimport", "mysqlshow", "mysqlcheck", "mysqlpump", "mariadb", "mariadb-dump",
})


def redact_text(text: str) -> str:
    """``text`` with every credential the table recognises replaced by ``[redacted]``."""
    if text in _NOTHING_TO_REDACT:
        return text
    if len(text) > MAX_SCANNED_CHARS:
        text = text[:MAX_SCANNED_CHARS] + f"...[cut: {len(text) - MAX_SCANNED_CHARS:,} more characters]"
    redacted = text
    for row in CREDENTIAL_PATTERNS:
        redacted = row.pattern.sub(_redact_secret_group, redacted)
    if redacted == text and len(text) <= _REMEMBERED_CHARS:
        if len(_NOTHING_TO_REDACT) >= _REMEMBERED_TEXTS:
            _NOTHING_TO_REDACT.clear()
        _NOTHING_TO_REDACT.add(text)
    return redacted


# Short strings without a credential (``sh``, ``-c``, ``nginx``) come back in command after command: each
# is scanned by the table's dozen patterns once. Only such strings are remembered (never one that held a
# credential), short ones, at most _REMEMBERED_TEXTS (then the set starts over).
_REMEMBERED_CHARS = 256
_REMEMBERED_TEXTS = 4096
_NOTHING_TO_REDACT: set[str] = set()


def redact_argv(argv: Sequence[object], *, program: str | None = None) -> list[object]:
    """An argument vector (a container's command or args, an exec's command) redacted:
    each string as ``redact_text``, and the element after a credential option.

    ``program`` is the command the vector is given to, when it is not its first
    element (a container's ``args`` follow its ``command``); it decides what a
    short option such as ``-p`` means."""
    program = _program(argv) if program is None else program.rsplit("/", 1)[-1]
    redacted: list[object] = []
    secret_next = False
    user_password_next = False
    for item in argv:
        if not isinstance(item, str):
            redacted.append(item)
            secret_next = user_password_next = False
            continue
        if secret_next:
            redacted.append(REDACTED)
            secret_next = user_password_next = False
            continue
        if user_password_next and ":" in item:
            user, _, _password = item.partition(":")
            redacted.append(redact_text(user) + ":" + REDACTED)
            user_password_next = False
            continue
        redacted.append(redact_text(item))
        secret_next = _takes_secret_next(item, program)
        user_password_next = item in _USER_PASSWORD_OPTIONS
        if program in _MYSQL_CLIENTS and item.startswith("-p") and len(item) > 2 and not item.startswith("--"):
            redacted[-1] = "-p" + REDACTED
    return redacted


def _takes_secret_next(item: str, program: str | None) -> bool:
    if _SECRET_OPTION.fullmatch(item):
        return True
    return program is not None and _PASSWORD_FLAGS.get(program) == item


def _program(argv: Sequence[object]) -> str | None:
    first = argv[0] if argv else None
    return first.rsplit("/", 1)[-1] if isinstance(first, str) else None


def _redact_secret_group(match: re.Match[str]) -> str:
    start, end = match.span("secret")
    whole_start = match.start()
    text = match.group(0)
    return text[: start - whole_start] + REDACTED + text[end - whole_start:]
