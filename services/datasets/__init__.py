"""The datasets service: owns Dataset, Image, ImportJob and Split; imports files in four formats
into a content-addressed store, and decides splits."""
