// ESLint over the TypeScript sources of every package, example, the integration tests and the
// benchmark, with typescript-eslint's type-aware recommended rules (`npm run lint`).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const TESTS = ['packages/*/test/**/*.ts', 'examples/*/test/**/*.ts', 'test/**/*.ts'];

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/*.js', '**/*.mjs', '**/*.d.ts'] },
  {
    files: ['packages/*/src/**/*.ts', 'examples/*/src/**/*.ts', 'bench/**/*.ts', ...TESTS],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // Object type numbers come from images and from plugins as plain numbers; comparing them with ObjectType members is the point.
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
      // Error messages print lists as "1,2,3", and values that only run-time checks can rule out (typed never).
      '@typescript-eslint/restrict-template-expressions': ['error', {
        allowAny: true, allowBoolean: true, allowNullish: true, allowNumber: true, allowRegExp: true, allowArray: true, allowNever: true,
      }],
    },
  },
  {
    files: TESTS,
    rules: {
      // Tests read JSON that the CLI prints and probe untyped values; the assertions check their shape.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      // chai's property assertions (expect(x).to.be.true) are expressions by design.
      '@typescript-eslint/no-unused-expressions': 'off',
    },
  },
  {
    files: ['packages/cli/src/output.ts'],
    // Quoting for the terminal matches control characters on purpose.
    rules: { 'no-control-regex': 'off' },
  },
);
