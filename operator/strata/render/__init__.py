"""Pure renderers: a typed resource in, child manifests (plain dicts) out.

Nothing here talks to the API server or imports kopf or kubernetes, so every renderer is
unit-testable and the controllers stay thin.
"""
