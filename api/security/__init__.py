"""Who may do what: admin authentication, the failed-authentication throttle, the security headers."""
