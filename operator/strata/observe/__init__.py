"""Pure observation of children: what live objects say, for status."""
