#!/usr/bin/env node
// Installed entry: runs the compiled build.
import '../dist/main.js';
