"""The inbound-setup audit (``mtasts-resolver audit DOMAIN``): what a sender sees, and what to fix.

:mod:`.facts` holds what was seen (typed data, no I/O), :mod:`.gather`
collects it with the daemon's own resolvers, :mod:`.tls` and
:mod:`.starttls` take a server's certificate chain, and :mod:`.findings`
judges the facts (pure rules, table-tested).  Rendering is the shell's
(:mod:`mtasts_resolver.app.audit`).
"""
