import js from '@eslint/js'
import globals from 'globals'

export default [
  { ignores: ['target/**', 'node_modules/**', 'binding.js', 'binding.d.ts', 'npm/**'] },
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: 'module',
      globals: { ...globals.node },
    },
    rules: { 'no-unused-vars': ['error', { argsIgnorePattern: '^_', caughtErrors: 'none' }] },
  },
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs' },
  },
  {
    files: ['__test__/jest/**', '**/*.jest.cjs'],
    languageOptions: { globals: { ...globals.jest } },
  },
]
