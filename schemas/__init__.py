"""Curated TFDV schemas, one directory per dataset; shipped as package data so installs find them."""
